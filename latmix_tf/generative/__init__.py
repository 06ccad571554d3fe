"""Generative models of the training set (DCGAN, VAE): one handle, training, caching.

Latent mixup and the inversion code never care which generator they got; they use the
`GenerativeModel` handle returned by `train_or_load_generator` (or `build_generative_model`
for an untrained one). The interface, whatever `kind`:

  gm.kind                 "dcgan" or "vae"
  gm.latent_dim           d
  gm.prior                "uniform" (U[-1,1]^d) or "normal" (N(0, I)); the VAE is always "normal"
  gm.prior_bound          1.0 for "uniform" (the support the inversion clips z to), None for
                          "normal"
  gm.image_shape          (H, W, C)
  gm.decode(z)            float32 [N,d] -> images [N,H,W,C] in [0,1]; training=False, no
                          Python side effects, so it can be called inside a tf.function and
                          differentiated with respect to z
  gm.sample_prior(n, seed)  [n, d] codes from the prior; stateless (int or shape-[2] seed)
  gm.sample(n, seed)      decode(sample_prior(n, seed))
  gm.decode_numpy(z)      decodes a large numpy array of codes in batches (compiled once)
  gm.feature_fn(x)        images -> list of activation tensors of a fixed network, for the
                          inversion's feature loss: the discriminator's conv stages (GAN), the
                          encoder's conv stages (VAE); training=False
  gm.encode               callable images -> codes [N, d] from an encoder trained with the
                          generator, the inversion's start: the VAE's posterior mean, the
                          DCGAN's recall-term encoder (recon_weight > 0); plain DCGAN: None
  gm.models               {"generator", "discriminator"[, "encoder"]} or {"encoder",
                          "decoder"}: the Keras
                          models (for checkpointing / hashing); gm.generator is the decoding one
  gm.trainer              the `DCGAN` / `VAE` keras.Model that owns optimizers and trackers
  gm.config               the `GeneratorConfig`
  gm.checkpoint_hash      SHA-256 (16 hex) of the weights of `gm.models`, set once trained or
                          loaded; key latent banks with it (also `generator_checkpoint_hash(gm)`)
  gm.metadata             the generator stage's record (key, status, seconds, outputs)

`generator_stage(cfg, data, directory, seed)` is the "generator" stage (`latmix_tf.stages`):
it trains with checkpoints (resumes after a kill) and writes a sample grid per epoch; a
later call with the same config, data fingerprint and seed loads the cached weights (its
record says "cached"), anything else retrains. `train_or_load_generator` returns its value.
Also here: `frechet` (the generator's Fréchet distance) and `reports` (its figures).
"""

from latmix_tf.generative.handle import (GenerativeModel, build_generative_model,
                                         generator_checkpoint_hash)
from latmix_tf.generative.health import GeneratorTrainingError, HealthGuard, check_health
from latmix_tf.generative.reports import save_image_grid
from latmix_tf.generative.train import (generator_stage, train_generator,
                                        train_or_load_generator)
