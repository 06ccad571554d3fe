"""Serving exported classifiers over HTTP with TensorFlow Serving's REST API.

Why this exists: a researcher wants to query the trained models (a demo, a robustness probe
from another language, a comparison against a deployed model) without installing
TensorFlow Serving; and a user who later deploys must be able to swap in the real
`tensorflow_model_server` with no client change. So this server speaks exactly TF Serving's
REST dialect on the same SavedModels (made by `latmix_tf.export.export_classifier`):

  GET  /v1/models/NAME[/versions/V|/labels/L]            model status
  GET  /v1/models/NAME[/versions/V|/labels/L]/metadata   SignatureDefs (DT_FLOAT, dims)
  GET  /metrics  (= /monitoring/prometheus/metrics)      Prometheus text format
  POST /v1/models/NAME[/versions/V|/labels/L]:predict    {"signature_name": "serving_default",
                                                "instances": [image, ...]}       (row)
                                             or {"inputs": {"images": [image, ...]}}  (columnar)
  -> {"predictions": [{"logits": [...], "probabilities": [...]}, ...]}
  or {"outputs": {"logits": [[...]], "probabilities": [[...]]}}

Images are float32 [H, W, C] in [0, 1] (28x28x1 for (Fashion-)MNIST, 32x32x3 for CIFAR-10).
Without `/versions/V` the highest version answers. Errors answer {"error": "..."} with 400
(bad JSON, shapes, dtypes, signatures, nesting deeper than 32, a version over 18 digits, an
instance larger than the signature's shape, a Content-Length that is not ASCII digits or
that conflicts with another), 404 (unknown model, version, label or route; it names what
was asked for, at most 64 characters, and never lists what is served), 405 (wrong HTTP
method), 408 (request not received within `request_timeout_s`), 411/413 (no length / body
over `max_body_bytes`, more than `max_batch_size` instances), 503 + Retry-After (queue,
connections in all or from one address, or large-request slot full), and the server keeps
serving. Every limit is a `ServerConfig` field; docs/serving.md describes each.

Models and versions. `models` maps a name to a base path in one of three layouts:
TF Serving's `DIR/<version>/saved_model.pb`; our `saved_models/<experiment>/` with
`seed_<n>/` subdirectories (seed n is version n); a bare SavedModel directory, which is
version n when named `seed_<n>` or `<n>` and version 1 otherwise. Every version found is
loaded and served (TF Serving by default serves only the latest; the layout writer below
asks it for all). Version labels come from the model config file's `version_labels`. From
Python:

  from latmix_tf.serving import serve, start_server, parse_model_specs
  serve(parse_model_specs(["erm=saved_models/erm_fmnist", "lm=saved_models/lm_gan_fmnist"]))
  handle = start_server({"erm": "saved_models/erm_fmnist"}, port=0)  # tests: handle.port
  handle.shutdown()

`serve` blocks until SIGTERM/SIGINT, closes the listening socket at once, gives in-flight
requests `drain_timeout_s`, and returns the exit code: 0, or 1 (each dropped request
logged) when some were still running. It binds 127.0.0.1:8501 by default (8501 is TF
Serving's REST port); there is no authentication, so bind another address only behind a
proxy that adds it. A TF Serving `--model_config_file` (text proto; `name`, `base_path`
and `version_labels` are read) may add models. `enable_batching` merges concurrent small
predicts (up to `chunk_size` instances, waiting `batch_timeout_micros`), like TF Serving's
`--enable_batching`.

Swapping in the real TensorFlow Serving. The SavedModels need no change; only its version
layout is stricter (numeric directories). A model whose base path is already
`DIR/1/saved_model.pb` is served with

  tensorflow_model_server --rest_api_port=8501 --model_name=erm_fmnist \
      --model_base_path=/abs/path/DIR

or with docker:

  docker run -p 127.0.0.1:8501:8501 -v /abs/path/DIR:/models/erm_fmnist \
      -e MODEL_NAME=erm_fmnist tensorflow/serving

For our `seed_<n>` layout (or several models), `write_tfserving_layout(models, out_dir)` links
the same SavedModels as `out_dir/<name>/<n>` and writes `out_dir/models.config`; then run
`tensorflow_model_server --rest_api_port=8501 --model_config_file=out_dir/models.config`.
For docker, write it with `config_root="/models"`, copy it with `cp -rL out_dir tfs` (no
symlink may point outside the mounted volume) and run `docker run -p 127.0.0.1:8501:8501
-v $PWD/tfs:/models tensorflow/serving --model_config_file=/models/models.config`.
Clients keep the same URLs and JSON. Differences that remain: TF Serving also serves gRPC
(port 8500), classify/regress and b64 strings; its error texts differ in wording (not
in shape or status class).
"""

from latmix_tf.serving.process import serve
from latmix_tf.serving.repository import (Servable, ServingError, default_model_name,
                                          find_versions, load_servables, parse_model_config,
                                          parse_model_specs, parse_version_labels,
                                          write_tfserving_layout)
from latmix_tf.serving.rest import ModelServer
from latmix_tf.serving.server import (DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT,
                                      ServerConfig, ServerHandle, start_server)

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_PORT", "ModelServer", "Servable",
           "ServerConfig", "ServerHandle", "ServingError", "default_model_name", "find_versions",
           "load_servables", "parse_model_config", "parse_model_specs", "parse_version_labels",
           "serve", "start_server", "write_tfserving_layout"]
