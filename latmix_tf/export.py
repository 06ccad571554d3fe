"""SavedModel export and loading of trained classifiers.

Every classifier, whatever method trained it, is exported with the same signature:
`serving_default(images: float32[N,H,W,C] in [0,1]) -> {"logits", "probabilities"}`
(plus a `features` signature with the penultimate representation, when the model has one).
Evaluation, serving and users' own code only ever see this signature, so any model a
user brings with it is measured by the same code. We export with `keras.export.ExportArchive`
and an explicit endpoint: `model.export` would name the outputs `output_0`.
The directory also holds `metadata.json` (config, data fingerprint, metrics, versions).
Export goes to a temporary sibling directory that is renamed into place, so a killed export
never leaves a half-written SavedModel that looks valid.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import jsonio

# The JSON record helpers live in the TensorFlow-free jsonio; callers on the TF side use these.
read_json, write_json_atomic = jsonio.read_json, jsonio.write_json_atomic

SIGNATURE = "serving_default"
FEATURES_SIGNATURE = "features"
METADATA_FILE = "metadata.json"


def versions() -> Dict[str, str]:
  return {"tensorflow": tf.__version__, "keras": keras.__version__,
          "numpy": np.__version__, "python": platform.python_version()}


def export_classifier(model: keras.Model, export_dir: str, image_shape: Tuple[int, int, int],
                      metadata: Optional[Dict[str, Any]] = None) -> str:
  """Exports `model` as a SavedModel with the standard classifier signature.

  Args:
    model: a Keras classifier mapping [0,1] images to logits.
    export_dir: target directory (replaced if it exists).
    image_shape: (H, W, C) of the inputs.
    metadata: JSON-serialisable facts stored in `<export_dir>/metadata.json`.
  Returns:
    The export directory.
  """
  spec = tf.TensorSpec([None, *image_shape], tf.float32, name="images")

  def serve(images):
    logits = model(images, training=False)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
  if hasattr(model, "features"):
    # Penultimate features: the feature space of the generator Fréchet distance.
    archive.add_endpoint(name=FEATURES_SIGNATURE,
                         fn=lambda images: {"features": model.features(images, training=False)},
                         input_signature=[spec])
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = export_dir.rstrip("/") + ".partial"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  archive.write_out(tmp, verbose=False)
  meta = dict(metadata or {})
  meta.setdefault("versions", versions())
  meta.setdefault("signature", {"name": SIGNATURE, "input": "images float32 [N,H,W,C] in [0,1]",
                                "outputs": ["logits", "probabilities"],
                                "image_shape": list(image_shape)})
  write_json_atomic(os.path.join(tmp, METADATA_FILE), meta)
  if os.path.exists(export_dir):
    shutil.rmtree(export_dir)
  os.replace(tmp, export_dir)
  return export_dir


def read_metadata(export_dir: str) -> Dict[str, Any]:
  path = os.path.join(export_dir, METADATA_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def load_classifier(export_dir: str) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """Loads an exported classifier and returns its serving signature function.

  Raises:
    FileNotFoundError: no SavedModel at `export_dir`.
    ValueError: the SavedModel lacks the standard signature or its outputs.
  """
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    raise FileNotFoundError(
        f"No SavedModel at {export_dir!r} (no saved_model.pb). Export one with an experiment "
        f"(`python main.py --experiment=...`) or pass the directory that holds saved_model.pb.")
  loaded = tf.saved_model.load(export_dir)
  if SIGNATURE not in loaded.signatures:
    raise ValueError(f"{export_dir}: no {SIGNATURE!r} signature; found "
                     f"{sorted(loaded.signatures)}.")
  fn = loaded.signatures[SIGNATURE]
  outputs = set(fn.structured_outputs)
  if "logits" not in outputs:
    raise ValueError(f"{export_dir}: signature outputs {sorted(outputs)} lack 'logits'.")
  fn._latmix_keepalive = loaded  # pylint: disable=protected-access  (keep variables alive)
  return fn


def signature_input(fn) -> Tuple[str, tf.TensorSpec]:
  """(name, spec) of the single input of a loaded signature."""
  _, kwargs = fn.structured_input_signature
  (name, spec), = kwargs.items()
  return name, spec


def logits_fn(fn) -> Callable[[tf.Tensor], tf.Tensor]:
  """Wraps a loaded signature as a plain `images -> logits` callable (differentiable)."""
  name, _ = signature_input(fn)
  return lambda images: fn(**{name: images})["logits"]
