"""The latent side of Latent-Mixup: everything between a trained generator and its mixes.

  inversion.py    encoder start + latent optimisation (Lipton & Tripathi 2017), and the one
                  decision of where the inversion starts (`inversion_start`)
  encoder_stage.py the post-hoc inversion encoder, for a generator without its own (stage)
  bank.py         the latent bank: every training image inverted, chunked, resumable (stage)
  bank_store.py   the bank's checksummed on-disk format
  stages.py       `build_latent_stages`: generator, encoder, bank and Fréchet stages, in order
  mixes.py        pair sampling and latent mixing of bank codes, as training draws them
  mix_quality.py  the decoded mixes in a reference network's eyes
  report.py       the stages' figures, notes and metrics for the run's report

Nothing here imports the training side: the runner builds these stages and hands their
results to the training methods that declared them (`training/registry.py`).
"""

from latmix_tf.latent.mixes import PairSampler, latent_mix_dataset
