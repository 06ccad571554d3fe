"""ERM baselines: standard training of the dataset's classifier, clean batches only.

Run:  python main.py --experiment=erm_fmnist   (default scale `full`)
Expect (2 CPU cores): erm_fmnist ~93% test accuracy in ~6 min; erm_mnist ~99.4% in ~4 min;
erm_cifar10 (compact pre-activation ResNet, 30 epochs) is slow on CPU (see README).
"""

from latmix_tf.training import ERMConfig

from experiments.common import Experiment, classifier_config, run_classifier


def _make(dataset_key: str) -> Experiment:
  name = f"erm_{dataset_key}"
  description = (f"Standard training (ERM) on {dataset_key}: the reference every defence is "
                 f"compared with. Clean accuracy, blur sweep, DeepFool rho_adv, FGSM/PGD, ECE.")

  def get_config(scale="full", seed=0, data_dir=None):
    return classifier_config(name, dataset_key, ERMConfig(), scale, seed, data_dir, description)
  return Experiment(name, description, get_config, run_classifier)


EXPERIMENTS = {e.name: e for e in (_make("mnist"), _make("fmnist"), _make("cifar10"))}
