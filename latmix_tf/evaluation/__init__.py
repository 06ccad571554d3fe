"""Robustness and calibration evaluation of exported classifiers.

`evaluate_saved_model` is the single entry point (used by `main.py --evaluate` and at the end
of every experiment); the submodules hold the measurements it combines: `blur` (Gaussian
blur equal to scipy's), `deepfool` (batched L2 DeepFool, rho_adv), `autoattack` (AutoAttack
and the APGD accuracy-vs-eps curve), `corruptions` (MNIST-C / CIFAR-10-C, cached),
`calibration` (ECE, NLL, Brier, temperature scaling), `sanity` (Carlini et al. 2019's checks)
and `plots` (PNG figures). FGSM / PGD live in `latmix_tf.attacks`, shared with training.
"""

from latmix_tf.evaluation.blur import gaussian_blur
from latmix_tf.evaluation.calibration import (brier_score, calibration_metrics,
                                              expected_calibration_error, fit_temperature,
                                              negative_log_likelihood, reliability_bins)
from latmix_tf.evaluation.deepfool import (DeepFoolResult, make_deepfool_fn, run_deepfool,
                                           summarize)
from latmix_tf.evaluation.robustness import (ATTACK_CONFIG_FILE, EVALUATION_FILE, PNG_FILES,
                                             evaluate_saved_model, sanity_notes)
