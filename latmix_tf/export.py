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

A SavedModel can still be damaged later (a truncated copy, a full disk, a bit flip) or belong
to another run under the same export path. So the export records the logits of a few fixed
probe images (`probe_images`: seeded noise and simple patterns, made with numpy only) in
`metadata.json["probe"]`, and `verify_saved_model` reuses a model only when it loads,
reproduces those logits and carries the expected run key. `load_classifier` turns a damaged
file into one `SavedModelError` line instead of a protobuf or checkpoint traceback.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from latmix_tf import jsonio
from latmix_tf.data import to_float

# The JSON record helpers live in the TensorFlow-free jsonio; callers on the TF side use these.
read_json, write_json_atomic = jsonio.read_json, jsonio.write_json_atomic

SIGNATURE = "serving_default"
FEATURES_SIGNATURE = "features"
METADATA_FILE = "metadata.json"
PROBE_SEED = 20240229
# Loaded graph vs eager Keras, different thread counts: float32 round-off, far below any damage.
PROBE_RTOL, PROBE_ATOL = 1e-4, 1e-4


class SavedModelError(ValueError):
  """A SavedModel is missing pieces, damaged, or not the one expected; one-line message."""


def probe_images(image_shape: Tuple[int, int, int], n: int = 4) -> np.ndarray:
  """`n` fixed float32 images in [0, 1]: seeded uniform noise, a gradient and a checkerboard.

  numpy only, so any process (the fault drill, a user's check) rebuilds them exactly.
  """
  h, w, c = image_shape
  noise = np.random.default_rng(PROBE_SEED).uniform(size=(max(n - 2, 0), h, w, c))
  gradient = np.broadcast_to(np.linspace(0.0, 1.0, w)[None, :, None], (h, w, c))
  checker = np.broadcast_to(((np.arange(h)[:, None] // 4 + np.arange(w)[None, :] // 4) % 2)
                            [:, :, None], (h, w, c))
  return np.concatenate([noise, gradient[None], checker[None]])[:n].astype(np.float32)


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
  probe = {"seed": PROBE_SEED, "n": 4, "logits": np.asarray(
      model(probe_images(image_shape), training=False), np.float64).tolist()}
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = export_dir.rstrip("/") + ".partial"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  archive.write_out(tmp, verbose=False)
  meta = dict(metadata or {})
  meta["probe"] = probe
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
  """`metadata.json` of a SavedModel, {} when absent or unreadable (a user's own model)."""
  meta = read_json(os.path.join(export_dir, METADATA_FILE))
  return meta if isinstance(meta, dict) else {}


def update_metadata(export_dir: str, updates: Dict[str, Any]) -> None:
  """Merges `updates` into `metadata.json`, keeping what export recorded (the probe logits)."""
  write_json_atomic(os.path.join(export_dir, METADATA_FILE),
                    {**read_metadata(export_dir), **updates})


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def check_probe(fn, meta: Dict[str, Any]) -> Optional[str]:
  """None if the loaded signature `fn` reproduces `meta["probe"]` logits, else the reason."""
  probe = meta.get("probe")
  if not isinstance(probe, dict) or not probe.get("logits"):
    return "its metadata.json records no probe logits (exported before they were recorded)"
  _, spec = signature_input(fn)
  images = probe_images(tuple(spec.shape[1:]), int(probe.get("n", 4)))
  want = np.asarray(probe["logits"], np.float64)
  try:
    got = np.asarray(logits_fn(fn)(tf.constant(images)), np.float64)
  except Exception as e:  # pylint: disable=broad-except  (any failure = unusable model)
    return f"it fails on the probe images ({_first_line(e)})"
  if got.shape != want.shape or not np.allclose(got, want, rtol=PROBE_RTOL, atol=PROBE_ATOL):
    diff = np.max(np.abs(got - want)) if got.shape == want.shape else float("nan")
    return (f"its logits on the probe images differ from those recorded at export "
            f"(max |diff| {diff:.3g}): the weights are damaged")
  return None


def verify_saved_model(export_dir: str,
                       expected_run_key: Optional[Dict[str, Any]] = None) -> Optional[str]:
  """Why the SavedModel at `export_dir` must not be reused, or None if it may be.

  Reusable = it loads, reproduces the probe logits recorded at export (tight tolerance) and,
  when `expected_run_key` is given, its metadata's `run_key` equals it (not another run's
  model under the same export path). Costs one SavedModel load (~1 s on 2 CPU cores).
  """
  meta = read_metadata(export_dir)
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    return f"{export_dir} holds no saved_model.pb"
  if not meta:
    return f"{export_dir}: metadata.json is missing or unreadable"
  if expected_run_key is not None and meta.get("run_key") != expected_run_key:
    return (f"{export_dir} holds another run's model (its run key {meta.get('run_key')} is "
            f"not this run's {expected_run_key})")
  try:
    fn = load_classifier(export_dir)
  except (SavedModelError, FileNotFoundError) as e:
    return str(e)
  reason = check_probe(fn, meta)
  return f"{export_dir}: {reason}" if reason else None


def load_classifier(export_dir: str) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """Loads an exported classifier and returns its serving signature function.

  Raises:
    FileNotFoundError: no SavedModel at `export_dir`.
    SavedModelError: the SavedModel is damaged (cannot be loaded) or lacks the standard
      signature or its outputs.
  """
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    raise FileNotFoundError(
        f"No SavedModel at {export_dir!r} (no saved_model.pb). Export one with an experiment "
        f"(`python main.py --experiment=...`) or pass the directory that holds saved_model.pb.")
  try:
    loaded = tf.saved_model.load(export_dir)
  except Exception as e:  # pylint: disable=broad-except  (protobuf, checkpoint, IndexError...)
    raise SavedModelError(
        f"{export_dir}: the SavedModel is damaged and cannot be loaded ({_first_line(e)}); "
        f"re-export it (rerun its experiment with --rebuild=classifier).") from None
  if SIGNATURE not in loaded.signatures:
    raise SavedModelError(f"{export_dir}: no {SIGNATURE!r} signature; found "
                          f"{sorted(loaded.signatures)}.")
  fn = loaded.signatures[SIGNATURE]
  outputs = set(fn.structured_outputs)
  if "logits" not in outputs:
    raise SavedModelError(f"{export_dir}: signature outputs {sorted(outputs)} lack 'logits'.")
  fn._latmix_keepalive = loaded  # pylint: disable=protected-access  (keep variables alive)
  return fn


def signature_input(fn) -> Tuple[str, tf.TensorSpec]:
  """(name, spec) of the single input of a loaded signature."""
  _, kwargs = fn.structured_input_signature
  (name, spec), = kwargs.items()
  return name, spec


def predict_probabilities(serving_fn, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Runs a loaded SavedModel signature over images (uint8, or float in [0, 1]) in batches;
  returns its "probabilities" output as numpy."""
  name, _ = signature_input(serving_fn)
  out = [serving_fn(**{name: to_float(images[i:i + batch_size])})["probabilities"].numpy()
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def logits_fn(fn) -> Callable[[tf.Tensor], tf.Tensor]:
  """Wraps a loaded signature as a plain `images -> logits` callable (differentiable)."""
  name, _ = signature_input(fn)
  return lambda images: fn(**{name: images})["logits"]


def saved_model_fingerprint(export_dir: str) -> str:
  """SHA-256 (16 hex) of a SavedModel's fingerprint.pb (TF's checksums of graph + weights).

  What keys everything computed from an exported model (its evaluation, a Fréchet distance
  in its features): a re-export with other weights changes it, a copy elsewhere does not.
  """
  path = os.path.join(export_dir, "fingerprint.pb")
  if not os.path.isfile(path):
    path = os.path.join(export_dir, "saved_model.pb")
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]
