"""The TF Serving REST server against real HTTP clients, on tiny exported classifiers.

A client written for TensorFlow Serving must get, over HTTP, the numbers the SavedModel gives
in-process (row and columnar formats, every version and layout), a 4xx `{"error": ...}` for
each kind of bad request with the server still answering afterwards, and a clean exit 0 on
SIGTERM that still answers the request in flight.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import export_tiny_classifier
import tensorflow as tf

from latmix_tf import export
from latmix_tf.serving import (find_versions, parse_model_config, parse_model_specs,
                               start_server, write_tfserving_layout)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """TF Serving layout tfs/{1,2}; our layout seeds/seed_{0,3} (versions 0 and 3, the same
  SavedModels as tfs/1 and tfs/2); a bare dir (tfs/1 itself: version 1)."""
  root = str(tmp_path_factory.mktemp("served"))
  v1 = export_tiny_classifier(os.path.join(root, "tfs", "1"), seed=1)
  v2 = export_tiny_classifier(os.path.join(root, "tfs", "2"), seed=2)
  os.makedirs(os.path.join(root, "seeds"))
  os.symlink(v1, os.path.join(root, "seeds", "seed_0"))
  os.symlink(v2, os.path.join(root, "seeds", "seed_3"))
  return {"tiny": os.path.join(root, "tfs"), "seeds": os.path.join(root, "seeds"), "plain": v1,
          "v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def server(models):
  handle = start_server({k: models[k] for k in ("tiny", "seeds", "plain")}, port=0,
                        max_body_bytes=MAX_BODY, log=lambda msg: None)
  yield handle
  assert handle.shutdown()


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).random((5, 28, 28, 1)).astype(np.float32)


def reference(path, x, signature=export.SIGNATURE):
  """The in-process answer: the SavedModel's signature called directly."""
  fn = tf.saved_model.load(path).signatures[signature]
  return {k: v.numpy() for k, v in fn(images=tf.constant(x)).items()}


def call(server, path, body=None, method=None):
  """(status, decoded JSON) of one urllib request; `body` is JSON-encoded unless bytes."""
  data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
  req = urllib.request.Request(server.url + path, data=data, method=method,
                               headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=30) as resp:
      return resp.status, json.loads(resp.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def assert_good_request_works(server, images, models):
  status, answer = call(server, "/v1/models/tiny/versions/1:predict",
                        {"instances": images[:2].tolist()})
  assert status == 200
  np.testing.assert_allclose([p["logits"] for p in answer["predictions"]],
                             reference(models["v1"], images[:2])["logits"], rtol=1e-5, atol=1e-6)


def test_model_status_lists_every_version(server):
  status, answer = call(server, "/v1/models/tiny")
  assert status == 200
  assert answer == {"model_version_status": [
      {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
      for v in ("2", "1")]}
  assert call(server, "/v1/models/seeds/versions/3")[1]["model_version_status"][0]["version"] == "3"


def test_metadata_has_tf_serving_signature_def(server):
  status, answer = call(server, "/v1/models/tiny/metadata")
  assert status == 200
  assert answer["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
  sig = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert sig["method_name"] == "tensorflow/serving/predict"
  images = sig["inputs"]["images"]
  assert images["dtype"] == "DT_FLOAT" and images["tensor_shape"]["unknown_rank"] is False
  assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
  assert sorted(sig["outputs"]) == ["logits", "probabilities"]
  assert [d["size"] for d in sig["outputs"]["logits"]["tensor_shape"]["dim"]] == ["-1", "10"]
  assert call(server, "/v1/models/tiny/versions/1/metadata")[1]["model_spec"]["version"] == "1"


@pytest.mark.parametrize("path,version", [
    ("/v1/models/tiny", "v2"), ("/v1/models/tiny/versions/1", "v1"),
    ("/v1/models/tiny/versions/2", "v2"), ("/v1/models/seeds/versions/0", "v1"),
    ("/v1/models/seeds/versions/3", "v2"), ("/v1/models/plain", "v1")])
def test_row_and_columnar_predictions_match_in_process(server, models, images, path, version):
  want = reference(models[version], images)
  status, rows = call(server, path + ":predict",
                      {"signature_name": "serving_default", "instances": images.tolist()})
  assert status == 200 and len(rows["predictions"]) == len(images)
  assert sorted(rows["predictions"][0]) == ["logits", "probabilities"]
  for key in ("logits", "probabilities"):
    np.testing.assert_allclose([p[key] for p in rows["predictions"]], want[key],
                               rtol=1e-5, atol=1e-6)
  for inputs in (images.tolist(), {"images": images.tolist()}):
    status, cols = call(server, path + ":predict", {"inputs": inputs})
    assert status == 200
    for key in ("logits", "probabilities"):
      np.testing.assert_allclose(cols["outputs"][key], want[key], rtol=1e-5, atol=1e-6)
  other = reference(models["v1" if version == "v2" else "v2"], images)["logits"]
  assert not np.allclose(want["logits"], other)  # the versions really are different models


def test_named_row_instances_and_single_output_signature(server, models, images):
  status, rows = call(server, "/v1/models/tiny/versions/1:predict",
                      {"instances": [{"images": x} for x in images[:3].tolist()]})
  assert status == 200
  np.testing.assert_allclose([p["logits"] for p in rows["predictions"]],
                             reference(models["v1"], images[:3])["logits"], rtol=1e-5, atol=1e-6)
  want = reference(models["v2"], images, "features")["features"]
  _, rows = call(server, "/v1/models/tiny:predict",
                 {"signature_name": "features", "instances": images.tolist()})
  _, cols = call(server, "/v1/models/tiny:predict",
                 {"signature_name": "features", "inputs": images.tolist()})
  # One output tensor: TF Serving drops its name in both formats.
  np.testing.assert_allclose(rows["predictions"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cols["outputs"], want, rtol=1e-5, atol=1e-6)


def _img(h=28, w=28, c=1):
  return np.zeros((h, w, c)).tolist()


BAD_REQUESTS = [
    ("malformed json", "/v1/models/tiny:predict", b'{"instances": [', 400),
    ("not an object", "/v1/models/tiny:predict", [1, 2], 400),
    ("empty body", "/v1/models/tiny:predict", b"", 400),
    ("strings", "/v1/models/tiny:predict",
     {"instances": np.full((1, 28, 28, 1), "a").tolist()}, 400),
    ("string numbers", "/v1/models/tiny:predict",
     {"instances": np.full((1, 28, 28, 1), "0.5").tolist()}, 400),
    ("booleans", "/v1/models/tiny:predict", {"instances": np.ones((1, 28, 28, 1), bool).tolist()},
     400),
    ("nulls", "/v1/models/tiny:predict", {"instances": [None]}, 400),
    ("ragged rows", "/v1/models/tiny:predict", {"instances": [_img(), _img(27)]}, 400),
    ("wrong image size", "/v1/models/tiny:predict", {"instances": [_img(32, 32, 3)]}, 400),
    ("missing channel axis", "/v1/models/tiny:predict", {"inputs": np.zeros((2, 28, 28)).tolist()},
     400),
    ("empty instances", "/v1/models/tiny:predict", {"instances": []}, 400),
    ("instances not a list", "/v1/models/tiny:predict", {"instances": 3.0}, 400),
    ("both formats", "/v1/models/tiny:predict", {"instances": [_img()], "inputs": [_img()]}, 400),
    ("missing instances and inputs", "/v1/models/tiny:predict", {"examples": [_img()]}, 400),
    ("wrong input name", "/v1/models/tiny:predict", {"inputs": {"pixels": [_img()]}}, 400),
    ("wrong row input name", "/v1/models/tiny:predict", {"instances": [{"x": _img()}]}, 400),
    ("unknown signature", "/v1/models/tiny:predict",
     {"signature_name": "serving_nope", "instances": [_img()]}, 400),
    ("signature not a string", "/v1/models/tiny:predict",
     {"signature_name": 3, "instances": [_img()]}, 400),
    ("unknown model", "/v1/models/nope:predict", {"instances": [_img()]}, 404),
    ("unknown version", "/v1/models/tiny/versions/9:predict", {"instances": [_img()]}, 404),
    ("unknown model status", "/v1/models/nope", None, 404),
    ("unknown version metadata", "/v1/models/tiny/versions/9/metadata", None, 404),
    ("unknown route", "/v1/models/tiny/labels/stable", None, 404),
    ("classify verb", "/v1/models/tiny:classify", {"examples": []}, 400),
    ("oversized body", "/v1/models/tiny:predict", b" " * (MAX_BODY + 1), 413),
]


@pytest.mark.parametrize("what,path,body,code", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_4xx_error_and_server_keeps_serving(server, models, images, what, path,
                                                             body, code):
  status, answer = call(server, path, body)
  assert status == code, (what, answer)
  assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]
  assert_good_request_works(server, images, models)


def test_wrong_http_method_gets_405(server, models, images):
  assert call(server, "/v1/models/tiny:predict", method="GET")[0] == 405
  assert call(server, "/v1/models/tiny", body={}, method="POST")[0] == 405
  assert call(server, "/v1/models/tiny", method="PUT")[0] == 405
  assert_good_request_works(server, images, models)


def test_oversized_body_is_refused_before_it_is_read(server, models, images):
  # Only the headers are sent: a 413 can only come back if the server refused from
  # Content-Length alone, without waiting for (and buffering) a gigabyte.
  conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
  conn.putrequest("POST", "/v1/models/tiny:predict")
  conn.putheader("Content-Length", str(10**9))
  conn.endheaders()
  resp = conn.getresponse()
  assert resp.status == 413 and "error" in json.loads(resp.read())
  conn.close()
  # With `Expect: 100-continue` (curl) the first answer must be the 413, not an invitation
  # (`100 Continue`) to upload the gigabyte.
  with socket.create_connection((server.host, server.port), timeout=10) as sock:
    sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(1 << 16).startswith(b"HTTP/1.1 413")
  assert_good_request_works(server, images, models)


def test_keep_alive_connection_survives_errors(server, models, images):
  conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
  for body, code in ((b"{oops", 400), (json.dumps({"inputs": images.tolist()}).encode(), 200),
                     (b'{"instances": [[1, 2], [3]]}', 400),
                     (json.dumps({"inputs": images.tolist()}).encode(), 200)):
    conn.request("POST", "/v1/models/tiny/versions/2:predict", body=body)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == code, answer
  np.testing.assert_allclose(answer["outputs"]["logits"], reference(models["v2"], images)["logits"],
                             rtol=1e-5, atol=1e-6)
  conn.close()


def test_concurrent_requests_get_their_own_answers(server, models):
  rng = np.random.default_rng(1)
  batches = [rng.random((1 + i % 3, 28, 28, 1)).astype(np.float32) for i in range(16)]
  answers = [None] * len(batches)

  def client(i):
    answers[i] = call(server, "/v1/models/tiny/versions/1:predict",
                      {"inputs": batches[i].tolist()})

  threads = [threading.Thread(target=client, args=(i,)) for i in range(len(batches))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  for batch, (status, answer) in zip(batches, answers):
    assert status == 200
    np.testing.assert_allclose(answer["outputs"]["logits"],
                               reference(models["v1"], batch)["logits"], rtol=1e-5, atol=1e-6)


def test_layouts_specs_and_model_config(models, tmp_path):
  assert sorted(find_versions(models["tiny"])) == [1, 2]
  assert sorted(find_versions(models["seeds"])) == [0, 3]
  assert find_versions(models["plain"]) == {1: models["v1"]}
  with pytest.raises(FileNotFoundError, match="No SavedModel"):
    find_versions(str(tmp_path))
  clash = tmp_path / "clash"
  clash.mkdir()
  os.symlink(models["v1"], clash / "1")
  os.symlink(models["v2"], clash / "seed_1")
  with pytest.raises(ValueError, match="both claim version 1"):
    find_versions(str(clash))
  assert parse_model_specs(["a=/x/y", "/saved_models/erm_fmnist/seed_0"]) == {
      "a": "/x/y", "erm_fmnist": "/saved_models/erm_fmnist/seed_0"}
  with pytest.raises(ValueError, match="twice"):
    parse_model_specs(["a=/x", "a=/y"])
  config = ("model_config_list {  # comment\n config { name: 'a' base_path: '/m/a'\n"
            " model_version_policy { all {} } }\n config { base_path: \"/m/b\" name: \"b\" } }")
  assert parse_model_config(config) == {"a": "/m/a", "b": "/m/b"}
  path = write_tfserving_layout({"seeds": models["seeds"]}, str(tmp_path / "tfs"))
  with open(path) as f:
    written = parse_model_config(f.read())
  assert written == {"seeds": str(tmp_path / "tfs" / "seeds")}
  assert sorted(find_versions(written["seeds"])) == [0, 3]
  with pytest.raises(FileNotFoundError):
    start_server({"none": str(tmp_path / "missing")}, port=0, log=lambda msg: None)


def _read_port(proc, deadline):
  for line in proc.stdout:
    if "listening on" in line:
      return int(line.rsplit(" ", 1)[1])
    assert time.monotonic() < deadline, "server did not start"
  raise AssertionError(f"server exited with {proc.wait()} before listening")


def test_sigterm_finishes_in_flight_request_and_exits_zero(models, images):
  code = ("from latmix_tf.serving import serve; "
          f"serve({{'tiny': {models['tiny']!r}}}, port=0)")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-u", "-c", code], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  try:
    port = _read_port(proc, time.monotonic() + 120)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive, left idle
    idle.request("GET", "/v1/models/tiny")
    assert idle.getresponse().read()
    body = json.dumps({"instances": images.tolist()}).encode()
    busy = socket.create_connection(("127.0.0.1", port), timeout=30)
    busy.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    # "100 Continue" proves the server has parsed the request and now waits for its body.
    interim = b""
    while b"\r\n\r\n" not in interim:
      interim += busy.recv(1)
    assert interim.startswith(b"HTTP/1.1 100")
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    while time.monotonic() - sent < 10:  # wait until the listening socket is closed
      try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        time.sleep(0.05)
      except (ConnectionRefusedError, ConnectionResetError):  # reset: closed while connecting
        break
    busy.sendall(body)  # the in-flight request completes after shutdown began
    reply = b""
    while chunk := busy.recv(1 << 16):
      reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head, reply[:300]
    np.testing.assert_allclose([p["logits"] for p in json.loads(payload)["predictions"]],
                               reference(models["v2"], images)["logits"], rtol=1e-5, atol=1e-6)
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - sent < 10
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()
