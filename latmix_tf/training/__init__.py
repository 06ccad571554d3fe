"""The single training loop (`loop.py`), the methods it runs (`method.py`, `registry.py`) and
their composition (`compose.py`)."""

from latmix_tf.training.adversarial import AdversarialConfig, AdversarialTraining
from latmix_tf.training.compose import Composed, ComposedConfig, compose
from latmix_tf.training.gat import GAT, GATConfig
from latmix_tf.training.loop import Trainer, train
from latmix_tf.training.manifold_mixup import ManifoldMixup, ManifoldMixupConfig
from latmix_tf.training.method import ERM, ERMConfig, Method, MethodInputs
from latmix_tf.training.mixup import Mixup, MixupConfig
from latmix_tf.training.registry import METHODS, build_method
