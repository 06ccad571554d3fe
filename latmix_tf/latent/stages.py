"""The latent stages a method may need, built by the runner before the method exists.

`build_latent_stages` runs (or loads) them in order and returns their results:

  1. "generator" stage: the DCGAN (with or without the recall term) or the VAE;
  2. "encoder" stage, only when `inversion_start` says the generator brought no encoder of
     its own (the plain DCGAN) - decided once, there;
  3. "bank" stage: every training image inverted (encoder start + latent optimisation).
The generator's Fréchet distance and the mixes' quality are measured on the evaluation side
(`evaluation.generator`), which is where the reference network is handed in.
Which runs need them is declared in the training registry (`registry.needs`); the runner
asks for them with the method's generator and inversion configs (`registry.latent_recipe`)
and hands `LatentStages.generator`, `.bank` and `.upstream` to the method's factory.
Stage directories sit under the run's workdir: generator/, encoder/, bank/; with
a stage index, a stage of equal key another run finished (the default recipe's generator and
bank, for an ablation that only changes the mixing) is copied, not redone.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Sequence

from latmix_tf import stages
from latmix_tf.generative.config import GeneratorConfig
from latmix_tf.latent.config import InversionConfig
from latmix_tf.data.sources import array_fingerprint
from latmix_tf.generative.train import generator_stage
from latmix_tf.latent.bank import bank_stage
from latmix_tf.latent.encoder_stage import encoder_stage
from latmix_tf.latent.inversion import inversion_start


@dataclasses.dataclass(frozen=True)
class LatentStages:
  """What the latent stages produced.

  Attributes:
    generator: the frozen generative model (`decode`, `decode_numpy`, `checkpoint_hash`).
    bank: the `LatentBank` of the training split.
    upstream: {"bank": its key hash}, which a consuming method puts in the classifier key
      (the bank's key already contains the generator's and the encoder's).
    records: each stage's record (seconds, status, outputs), for the report.
    generator_config: the config the generator was built from.
  """
  generator: Any
  bank: Any
  upstream: Dict[str, str]
  records: Dict[str, Dict[str, Any]]
  generator_config: GeneratorConfig


def build_latent_stages(generator_cfg: GeneratorConfig, inversion_cfg: InversionConfig,
                        splits, workdir: str, seed: int = 0, strategy=None,
                        log: Callable[[str], None] = print, rebuild: Sequence[str] = (),
                        stage_index: Optional[str] = None) -> LatentStages:
  """Runs (or loads) the generator, encoder and bank stages; returns their results."""
  rebuild = stages.downstream(rebuild)
  folder = lambda name: os.path.join(workdir, name)  # noqa: E731
  records = {}
  gen_result = generator_stage(generator_cfg, splits, folder("generator"), seed=seed,
                               rebuild="generator" in rebuild, log=log, strategy=strategy,
                               index=stage_index)
  gen, records["generator"] = gen_result.value, gen_result.record
  # The bank is keyed by the generator's stage key *and* its weights: a generator retrained
  # under the same key on another machine may differ in the last bits.
  upstream = {"generator": gen_result.record["key_hash"], "generator_weights": gen.checkpoint_hash}
  encoder = None
  if inversion_start(gen, inversion_cfg) == "encoder":
    enc = encoder_stage(gen, gen.checkpoint_hash, splits.x_train,
                        array_fingerprint(splits.x_train), inversion_cfg, folder("encoder"),
                        seed=seed, rebuild="encoder" in rebuild, log=log, index=stage_index)
    encoder, records["encoder"] = enc.value, enc.record
    upstream["encoder"] = enc.record["key_hash"]
  bank_result = bank_stage(gen, encoder, splits.x_train, splits.y_train, inversion_cfg,
                           folder("bank"), upstream, rebuild="bank" in rebuild, log=log,
                           seed=seed, strategy=strategy, index=stage_index)
  bank, records["bank"] = bank_result.value, bank_result.record
  summary = bank.summary()
  log(f"latent bank: mean PSNR {summary['mean_psnr']:.2f} dB over {len(bank)} training images")
  return LatentStages(gen, bank, {"bank": bank_result.record["key_hash"]}, records,
                      generator_cfg)
