"""Datasets: canonical-file and registry sources, integrity checks, fetching, tf.data pipelines.

The pipeline names are imported lazily (PEP 562): `latmix_tf.data`'s sources, checks and
errors load without TensorFlow, so the CLI validates a command line and reports a data error
in a fraction of a second instead of after TensorFlow's ~5 s start-up.
"""

from latmix_tf.data.fetch import FetchError, fetch, verify
from latmix_tf.data.formats import DataFormatError
from latmix_tf.data.integrity import DataIntegrityError
from latmix_tf.data.sources import (DATASETS, Arrays, DatasetNotFoundError, check_dataset,
                                    declare_custom_data, get_info, load_dataset,
                                    resolve_data_dir)

_PIPELINE = ("Splits", "eval_dataset", "make_splits", "to_float", "train_dataset")


def __getattr__(name):
  if name in _PIPELINE:
    from latmix_tf.data import pipeline  # pylint: disable=import-outside-toplevel
    return getattr(pipeline, name)
  raise AttributeError(f"module 'latmix_tf.data' has no attribute {name!r}")
