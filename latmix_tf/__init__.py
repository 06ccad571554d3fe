"""latmix_tf: Latent-Mixup and the defences it is compared with, in TensorFlow 2 / Keras 3.

The library never reads flags, never writes outside the directories it is given and never
calls `plt.show()`; `main.py` and `experiments/` drive it.
"""

__version__ = "0.1.0"
