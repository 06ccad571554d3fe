"""Robustness and calibration evaluation of exported classifiers.

`evaluate_saved_model` (`suite`) is the single entry point (used by `main.py --evaluate` and
at the end of every experiment, through the evaluation `stage`). It runs evaluators - one
small class per metric family behind the interface of `evaluator`, registered in
`evaluators` and chosen by `EvalConfig.evaluators` - from `natural` (clean accuracy,
calibration, blur, corruptions) and `adversarial` (DeepFool, FGSM / PGD, AutoAttack, the APGD
curve, sanity checks). They build on the measurements of the other submodules: `blur`
(Gaussian blur equal to scipy's), `deepfool` (batched L2 DeepFool, rho_adv), `autoattack`
(AutoAttack and the APGD accuracy-vs-eps curve), `corruptions` (MNIST-C / CIFAR-10-C,
cached), `calibration` (ECE, NLL, Brier, temperature scaling), `sanity` (Carlini et al.
2019's checks) and `plots` (PNG figures). FGSM / PGD live in `latmix_tf.attacks`, shared with
training.
"""

from latmix_tf.evaluation.blur import gaussian_blur
from latmix_tf.evaluation.calibration import (brier_score, calibration_metrics,
                                              expected_calibration_error, fit_temperature,
                                              negative_log_likelihood, reliability_bins)
from latmix_tf.evaluation.deepfool import (DeepFoolResult, make_deepfool_fn, run_deepfool,
                                           summarize)
from latmix_tf.evaluation.evaluator import EvalContext, EvalResult, Evaluator
from latmix_tf.evaluation.evaluators import EVALUATORS
from latmix_tf.evaluation.suite import (ATTACK_CONFIG_FILE, DEEPFOOL_FILE, EVALUATION_FILE,
                                        PNG_FILES, evaluate_saved_model, run_evaluators,
                                        sanity_notes)
