"""Common corruptions: MNIST-C (28x28 grayscale) and CIFAR-10-C (32x32 RGB), generated offline.

Why: an adversarial budget measures worst-case robustness; a reviewer also asks how a model
degrades under natural shifts - noise, blur, weather, digital artefacts, geometric changes.
The two standard benchmarks are Mu & Gilmer 2019 (MNIST-C, 15 corruptions, one severity
each) and Hendrycks & Dietterich 2019 (CIFAR-10-C, 15 corruptions x 5 severities). Their
reference generators need ImageMagick, OpenCV and old scikit-image, so latmix re-implements
them on batches (numpy, scipy.ndimage, Pillow), deterministically from a seed:

  mnist_c.py     the 15 MNIST-C corruptions (plus MNIST-C's own severity per corruption)
  cifar10_c.py   the 15 CIFAR-10-C corruptions at 5 severities
  ops.py         shared batched operations (motion blur, plasma fractal, Canny, warps)
  registry.py    suite and corruption names, protocol severities, `corrupt`
  benchmark.py   the corrupted test set (cached on disk, keyed by its config) and mCA

The suite is chosen by the images' channel count: 1 -> MNIST-C, 3 -> CIFAR-10-C.
"""

from latmix_tf.evaluation.corruptions.benchmark import (CorruptionSpec, corrupted_test_set,
                                                      corruption_metrics)
from latmix_tf.evaluation.corruptions.registry import (CORRUPTION_VERSION, SEVERITIES, SUITES,
                                                     corrupt, get, names, protocol_severities,
                                                     suite_for)
