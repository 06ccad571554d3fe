"""Datasets: canonical-file and registry sources, fetching, and tf.data pipelines."""

from latmix_tf.data.fetch import FetchError, fetch, verify
from latmix_tf.data.formats import DataFormatError
from latmix_tf.data.pipeline import Splits, eval_dataset, make_splits, to_float, train_dataset
from latmix_tf.data.sources import (DATASETS, Arrays, DatasetNotFoundError, get_info,
                                    load_dataset, resolve_data_dir)
