"""Serving exported classifiers over HTTP with TensorFlow Serving's REST API.

Why this exists: a researcher wants to query the trained models (a demo, a robustness probe
from another language, a comparison against a deployed model) without installing
TensorFlow Serving; and a user who later deploys must be able to swap in the real
`tensorflow_model_server` with no client change. So this server speaks exactly TF Serving's
REST dialect on the same SavedModels (made by `latmix_tf.export.export_classifier`):

  GET  /v1/models/NAME[/versions/V]            model status
  GET  /v1/models/NAME[/versions/V]/metadata   SignatureDefs (DT_FLOAT, tensor_shape dims)
  POST /v1/models/NAME[/versions/V]:predict    {"signature_name": "serving_default",
                                                "instances": [image, ...]}       (row)
                                             or {"inputs": {"images": [image, ...]}}  (columnar)
  -> {"predictions": [{"logits": [...], "probabilities": [...]}, ...]}
  or {"outputs": {"logits": [[...]], "probabilities": [[...]]}}

Images are float32 [H, W, C] in [0, 1] (28x28x1 for (Fashion-)MNIST, 32x32x3 for CIFAR-10).
Without `/versions/V` the highest version answers. Errors answer {"error": "..."} with 400
(bad JSON, shapes, dtypes, signatures), 404 (unknown model, version or route), 405 (wrong
HTTP method), 411/413 (no length / body over `max_body_bytes`) and the server keeps serving.

Models and versions. `models` maps a name to a base path in one of three layouts:
TF Serving's `DIR/<version>/saved_model.pb`; a bare SavedModel directory (version 1); our
`saved_models/<experiment>/` with `seed_<n>/` subdirectories (seed n is version n). Every
version found is loaded and served (TF Serving by default serves only the latest; the layout
writer below asks it for all). From Python:

  from latmix_tf.serving import serve, start_server, parse_model_specs
  serve(parse_model_specs(["erm=saved_models/erm_fmnist", "lm=saved_models/lm_gan_fmnist"]))
  handle = start_server({"erm": "saved_models/erm_fmnist"}, port=0)  # tests: handle.port
  handle.shutdown()

`serve` blocks until SIGTERM/SIGINT, then stops accepting, finishes in-flight requests and
returns (exit code 0). It binds 127.0.0.1:8501 by default (8501 is TF Serving's REST port).
A TF Serving `--model_config_file` (text proto; `name` and `base_path` are read) may add
models.

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
(port 8500), classify/regress, labels and b64 strings; its error texts differ in wording (not
in shape or status class).
"""

from latmix_tf.serving.repository import (Servable, ServingError, default_model_name,
                                          find_versions, load_servables, parse_model_config,
                                          parse_model_specs, write_tfserving_layout)
from latmix_tf.serving.server import (DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT,
                                      ModelServer, ServerHandle, serve, start_server)

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_PORT", "ModelServer", "Servable",
           "ServerHandle", "ServingError", "default_model_name", "find_versions",
           "load_servables", "parse_model_config", "parse_model_specs", "serve", "start_server",
           "write_tfserving_layout"]
