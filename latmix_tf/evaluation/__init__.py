"""Robustness and calibration evaluation of exported classifiers.

`evaluate_saved_model` is the single entry point (used by `main.py --evaluate` and at the end
of every experiment); the submodules hold the measurements it combines: `blur` (Gaussian
blur equal to scipy's), `deepfool` (batched L2 DeepFool, rho_adv), `calibration` (ECE, NLL)
and `plots` (PNG figures). FGSM / PGD live in `latmix_tf.attacks`, shared with training.
"""

from latmix_tf.evaluation.blur import gaussian_blur
from latmix_tf.evaluation.calibration import (calibration_metrics, expected_calibration_error,
                                              negative_log_likelihood)
from latmix_tf.evaluation.deepfool import (DeepFoolResult, make_deepfool_fn, run_deepfool,
                                           summarize)
from latmix_tf.evaluation.robustness import EVALUATION_FILE, PNG_FILES, evaluate_saved_model
