"""AutoAttack (Croce & Hein, ICML 2020) natively in TensorFlow 2, batched and CPU-friendly.

Why our own: the authors' code is PyTorch (TF models run through a CUDA-only bridge) and
ART's AutoAttack runs a different set of attacks. Each attack here is one `tf.function`
over its iterations, batched, with stateless seeds (reruns give identical numbers):
  * `apgd`   - APGD-CE and APGD-T (targeted DLR), Linf and L2;
  * `fab`    - FAB-T, exact box-constrained hyperplane projections;
  * `square` - Square Attack, score-based (never differentiates the model);
  * `suite`  - `run_autoattack` (the "standard" sequence, or the cheaper APGD-CE + APGD-T)
    with the per-example worst case, and `apgd_accuracy_curve` (accuracy vs eps).
"""

from latmix_tf.evaluation.autoattack.apgd import checkpoints, make_apgd_fn
from latmix_tf.evaluation.autoattack.fab import box_hyperplane_step, make_fab_fn
from latmix_tf.evaluation.autoattack.square import make_square_fn
from latmix_tf.evaluation.autoattack.suite import (VERSIONS, AutoAttackConfig,
                                                   apgd_accuracy_curve, attack_names,
                                                   run_autoattack)

__all__ = ["AutoAttackConfig", "VERSIONS", "apgd_accuracy_curve", "attack_names",
           "box_hyperplane_step", "checkpoints", "make_apgd_fn", "make_fab_fn",
           "make_square_fn", "run_autoattack"]
