"""Finding, loading and describing the SavedModels a server serves.

TF Serving's unit is a *servable*: one version of one model. A model's base path holds its
versions as numeric subdirectories (`DIR/1/saved_model.pb`, `DIR/2/...`); we accept that
layout, our own `saved_models/<experiment>/seed_<n>/` layout (seed n served as version n)
and a bare SavedModel directory: one named `seed_<n>` or `<n>` is version n (so
`erm=saved_models/erm_fmnist/seed_0` is version 0, as it would be inside its experiment
folder), any other name is version 1. The exports of every experiment are served without
copying. `write_tfserving_layout` turns any of them
into the numeric layout plus a `--model_config_file`, so the real `tensorflow_model_server`
serves the same SavedModels with the same versions.

Metadata is read from `saved_model.pb` itself (the SignatureDef protos), not rebuilt from the
loaded functions, so `GET .../metadata` shows the tensor names, dtypes and shapes that TF
Serving would show for the same file.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from latmix_tf import export

_VERSION_DIR = re.compile(r"^\d+$")
_SEED_DIR = re.compile(r"^seed_(\d+)$")


class ServingError(Exception):
  """A request the server refuses: `status` is the HTTP code, `message` goes into {"error": ...}.

  `retry_after` (seconds) is sent as a `Retry-After` header: set for 503s that a client
  should simply retry (queue full, server busy with large requests).
  """

  def __init__(self, status: int, message: str, retry_after: Optional[int] = None):
    super().__init__(message)
    self.status, self.message, self.retry_after = status, message, retry_after


ECHO_CHARS = 64  # of a client's string (model name, label, signature) in an error message


def clip(text: str, limit: int = ECHO_CHARS) -> str:
  """`text` cut to `limit` characters (marked with '...'), for echoing it in an error."""
  return text if len(text) <= limit else text[:limit] + "..."


def _has_saved_model(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def find_versions(base_path: str) -> Dict[int, str]:
  """Maps version number -> SavedModel directory under `base_path`.

  Accepted layouts: `base_path/saved_model.pb` (version n if the directory is named
  `seed_<n>` or `<n>`, else version 1); numeric subdirectories
  `base_path/<v>/saved_model.pb` (TF Serving's layout, version v); `base_path/seed_<n>/`
  (our `saved_models/<experiment>/` layout, version n).

  Raises:
    FileNotFoundError: `base_path` is missing or holds no SavedModel in any of the layouts.
    ValueError: two subdirectories claim the same version (e.g. `1` and `seed_1`, or `01`).
  """
  base_path = os.path.abspath(os.path.expanduser(base_path))
  if not os.path.isdir(base_path):
    raise FileNotFoundError(f"Model base path {base_path!r} does not exist or is not a directory.")
  if _has_saved_model(base_path):
    name = os.path.basename(base_path)
    seed = _SEED_DIR.match(name)
    return {int(seed.group(1)) if seed else int(name) if _VERSION_DIR.match(name) else 1:
            base_path}
  found: Dict[int, str] = {}
  for entry in sorted(os.listdir(base_path)):
    full = os.path.join(base_path, entry)
    seed = _SEED_DIR.match(entry)
    if not _has_saved_model(full) or not (_VERSION_DIR.match(entry) or seed):
      continue
    version = int(seed.group(1)) if seed else int(entry)
    if version in found:
      raise ValueError(f"{found[version]!r} and {full!r} both claim version {version}; "
                       f"keep one of them.")
    found[version] = full
  if not found:
    raise FileNotFoundError(
        f"No SavedModel under {base_path!r}: expected saved_model.pb in it, in numeric version "
        f"subdirectories (DIR/1/saved_model.pb, TF Serving's layout) or in seed_<n> "
        f"subdirectories (saved_models/<experiment>/seed_<n>/). Export one first.")
  return found


def default_model_name(path: str) -> str:
  """A model name for a path given without one: the experiment or directory name.

  `saved_models/erm_fmnist`, `saved_models/erm_fmnist/seed_0` and `models/erm_fmnist/3` all
  give "erm_fmnist".
  """
  path = os.path.abspath(os.path.expanduser(path)).rstrip(os.sep)
  base = os.path.basename(path)
  if _VERSION_DIR.match(base) or _SEED_DIR.match(base):
    base = os.path.basename(os.path.dirname(path))
  return base


def parse_model_specs(specs: Iterable[str]) -> Dict[str, str]:
  """Parses `name=path` strings (a bare `path` gets `default_model_name`) into {name: path}.

  This is the format of the `--model_base_path` list: `erm=saved_models/erm_fmnist,
  lm=saved_models/latent_mixup_gan_fmnist`.

  Raises:
    ValueError: an empty or invalid name, or the same name twice.
  """
  models: Dict[str, str] = {}
  for spec in specs:
    spec = spec.strip()
    if not spec:
      continue
    name, sep, path = spec.partition("=")
    if not sep:
      name, path = default_model_name(spec), spec
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
      raise ValueError(f"Invalid model name {name!r} in {spec!r}: use letters, digits, '_', '.' "
                       f"or '-' (a name goes into the URL /v1/models/NAME).")
    if name in models:
      raise ValueError(f"Model name {name!r} given twice ({models[name]!r} and {path!r}); "
                       f"name them explicitly: name=path.")
    models[name] = path
  return models


def parse_model_config(text: str) -> Dict[str, str]:
  """Reads {name: base_path} from a TF Serving `--model_config_file` (text protobuf).

  Only `name` and `base_path` of each `config { ... }` block are read here (labels:
  `parse_version_labels`); version policies are ignored (this server always serves every
  version it finds).

  Raises:
    ValueError: no config block, or a block lacks `name` or `base_path`.
  """
  text = re.sub(r"#[^\n]*", "", text)
  blocks = re.split(r"\bconfig\s*:?\s*\{", text)[1:]
  if not blocks:
    raise ValueError("Model config has no `config { name: ... base_path: ... }` block "
                     "inside `model_config_list { ... }`.")
  models: Dict[str, str] = {}
  for block in blocks:
    fields = {}
    for key in ("name", "base_path"):
      m = re.search(r"\b" + key + r"\s*:\s*(?:\"([^\"]*)\"|'([^']*)')", block)
      if not m:
        raise ValueError(f"Model config block lacks {key!r}: {block.strip()[:200]!r}")
      fields[key] = m.group(1) if m.group(1) is not None else m.group(2)
    models.update(parse_model_specs([f"{fields['name']}={fields['base_path']}"]))
  return models


def parse_version_labels(text: str) -> Dict[str, Dict[str, int]]:
  """Reads {name: {label: version}} from the `version_labels` of a TF Serving model config.

  `config { name: 'erm' base_path: '...' version_labels { key: 'stable' value: 0 } }` makes
  `/v1/models/erm/labels/stable` answer with version 0. Models without labels are absent.
  """
  text = re.sub(r"#[^\n]*", "", text)
  out: Dict[str, Dict[str, int]] = {}
  for block in re.split(r"\bconfig\s*:?\s*\{", text)[1:]:
    name = re.search(r"\bname\s*:\s*[\"']([^\"']*)[\"']", block)
    for key, value in re.findall(r"\bversion_labels\s*:?\s*\{\s*key\s*:\s*[\"']([^\"']+)[\"']"
                                 r"\s*value\s*:\s*(\d+)\s*\}", block):
      if name:
        out.setdefault(name.group(1), {})[key] = int(value)
  return out


def write_tfserving_layout(models: Dict[str, str], out_dir: str,
                           config_root: Optional[str] = None) -> str:
  """Links every servable into TF Serving's numeric layout and writes a model config for it.

  Creates `out_dir/<name>/<version>` symlinks to the absolute SavedModel directories and
  `out_dir/models.config` that serves all versions (`model_version_policy { all {} }`), so
  `tensorflow_model_server --rest_api_port=8501 --model_config_file=<out_dir>/models.config`
  answers like this server. For docker, pass `config_root="/models"` (where `out_dir` will be
  mounted) and copy with `cp -rL` so no symlink points outside the mounted volume.

  Args:
    models: {name: base path} in any layout `find_versions` accepts.
    out_dir: directory to fill (created if needed; existing version links are replaced).
    config_root: directory `out_dir` will be seen as by the server; default `out_dir` itself.
  Returns:
    The path of the written model config file.
  """
  blocks: List[str] = []
  for name, path in sorted(models.items()):
    model_dir = os.path.join(os.path.abspath(out_dir), name)
    os.makedirs(model_dir, exist_ok=True)
    for version, src in sorted(find_versions(path).items()):
      link = os.path.join(model_dir, str(version))
      if os.path.islink(link):
        os.remove(link)
      os.symlink(src, link)
    base = os.path.join(config_root, name) if config_root else model_dir
    blocks.append(f"  config {{\n    name: '{name}'\n    base_path: '{base}'\n"
                  f"    model_platform: 'tensorflow'\n"
                  f"    model_version_policy {{ all {{}} }}\n  }}")
  config_path = os.path.join(os.path.abspath(out_dir), "models.config")
  with open(config_path, "w") as f:
    f.write("model_config_list {\n" + "\n".join(blocks) + "\n}\n")
  return config_path


def _tensor_info_json(info) -> dict:
  shape = info.tensor_shape
  return {"dtype": types_pb2.DataType.Name(info.dtype),
          "tensor_shape": {"dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
                           "unknown_rank": shape.unknown_rank},
          "name": info.name}


def read_signature_defs(path: str) -> dict:
  """SignatureDefs of the SavedModel at `path`, as the JSON TF Serving's metadata API returns."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  graph = next((g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags),
               proto.meta_graphs[0])
  return {key: {"inputs": {k: _tensor_info_json(v) for k, v in sig.inputs.items()},
                "outputs": {k: _tensor_info_json(v) for k, v in sig.outputs.items()},
                "method_name": sig.method_name}
          for key, sig in graph.signature_def.items()}


class Servable:
  """One loaded version of one model: its signature functions, input specs and metadata.

  Calls are thread-safe (TensorFlow functions may run concurrently). A request's instances
  run in chunks of at most `chunk_size`, so a 10,000-image request never holds the model
  (and the memory of one giant batch) while small requests wait.
  """

  def __init__(self, name: str, version: int, path: str):
    self.name, self.version, self.path = name, version, path
    self._loaded = tf.saved_model.load(path)  # owns the variables the signatures read
    self.signatures = dict(self._loaded.signatures)
    if export.SIGNATURE not in self.signatures:
      raise ValueError(f"{path}: no {export.SIGNATURE!r} signature (found "
                       f"{sorted(self.signatures)}); export it with export_classifier.")
    self.input_specs = {key: dict(fn.structured_input_signature[1])
                        for key, fn in self.signatures.items()}
    self.signature_defs = read_signature_defs(path)

  def signature(self, signature_name: str) -> Tuple[object, Dict[str, tf.TensorSpec]]:
    """(function, {input name: spec}) of a signature; 400 for an unknown name."""
    if signature_name not in self.signatures:
      raise ServingError(400, f"Serving signature name: \"{clip(signature_name)}\" not found in "
                              f"signature def (available: {sorted(self.signatures)})")
    return self.signatures[signature_name], self.input_specs[signature_name]

  def predict(self, signature_name: str, inputs: Dict[str, np.ndarray],
              chunk_size: int = 256) -> Dict[str, np.ndarray]:
    """Runs a batch through a signature in chunks; `inputs` must already match its specs."""
    fn, _ = self.signature(signature_name)
    n = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, n, max(1, chunk_size)):
      try:
        out = fn(**{k: tf.constant(v[start:start + chunk_size]) for k, v in inputs.items()})
      except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
        raise ServingError(400, f"{type(e).__name__}: {e}") from e
      parts.append({k: v.numpy() for k, v in out.items()})
    if len(parts) == 1:
      return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def metadata(self) -> dict:
    """GetModelMetadataResponse as JSON: model_spec plus every SignatureDef."""
    return {"model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self.signature_defs}}}


def load_servables(models: Dict[str, str]) -> Dict[str, Dict[int, Servable]]:
  """Loads every version of every model: {name: {version: Servable}}.

  Raises:
    FileNotFoundError / ValueError: from `find_versions` or a SavedModel without the
      standard signature; nothing is served until every model loads.
  """
  if not models:
    raise ValueError("No models to serve: pass at least one name=path "
                     "(e.g. erm_fmnist=saved_models/erm_fmnist).")
  return {name: {v: Servable(name, v, p) for v, p in find_versions(path).items()}
          for name, path in models.items()}
