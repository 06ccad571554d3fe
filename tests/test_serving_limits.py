"""The server's limits, from outside over loopback: every crafted input gets a
4xx in bounded time, connections and large requests are bounded (503 + Retry-After), big
predicts are chunked, and labels, /metrics and batching answer like the in-process model.

One in-process server with small limits (short request deadline, few connections) serves
a tiny SavedModel exported here; each test ends by checking that a good request still works.
"""

import http.client
import json
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
from conftest import export_tiny_classifier
import tensorflow as tf

from latmix_tf import export
from latmix_tf.serving import ServingError, find_versions, start_server
from latmix_tf.serving.jsonbody import max_depth
from latmix_tf.serving.workers import Batcher, WorkerPool

DEADLINE = 1.5  # request_timeout_s of the server under test
LIMITS = dict(port=0, max_body_bytes=1 << 20, max_batch_size=64, chunk_size=16,
              request_timeout_s=DEADLINE, idle_timeout_s=5.0, max_connections=6, num_workers=2,
              queue_size=4, large_body_bytes=64 << 10, max_large_requests=1, drain_timeout_s=5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("limits")
  v0 = export_tiny_classifier(str(root / "tiny" / "0"), seed=3)
  v4 = export_tiny_classifier(str(root / "tiny" / "4"), seed=4)
  config = root / "models.config"
  config.write_text(f"model_config_list {{ config {{ name: 'tiny' base_path: '{root / 'tiny'}'"
                    f" version_labels {{ key: 'stable' value: 0 }}"
                    f" version_labels {{ key: 'canary' value: 4 }} }} }}")
  return {"v0": v0, "v4": v4, "config": str(config), "root": root}


@pytest.fixture(scope="module")
def server(exported):
  handle = start_server({}, log=lambda msg: None, model_config_file=exported["config"], **LIMITS)
  yield handle
  assert handle.shutdown()


def reference(path, x):
  fn = tf.saved_model.load(path).signatures[export.SIGNATURE]
  return fn(images=tf.constant(x))["logits"].numpy()


def request(server, method, path, body=None, timeout=10):
  """(status, headers, decoded body) over a fresh connection."""
  conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
  data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
  conn.request(method, path, body=data)
  resp = conn.getresponse()
  raw = resp.read()
  conn.close()
  ctype = resp.getheader("Content-Type", "")
  return resp.status, resp, json.loads(raw) if "json" in ctype else raw.decode()


def images(n, seed=0):
  return np.random.default_rng(seed).random((n, 28, 28, 1)).astype(np.float32)


def good_request_works(server, exported):
  x = images(2)
  status, _, answer = request(server, "POST", "/v1/models/tiny/versions/0:predict",
                              {"instances": x.tolist()})
  assert status == 200, answer
  np.testing.assert_allclose([p["logits"] for p in answer["predictions"]],
                             reference(exported["v0"], x), rtol=1e-5, atol=1e-6)


CRAFTED = [
    ("5000-digit version, predict", "POST", "/v1/models/tiny/versions/" + "9" * 5000 + ":predict",
     {"instances": [[[[0.0]] * 28] * 28]}, 400),
    ("5000-digit version, status", "GET", "/v1/models/tiny/versions/" + "1" * 5000, None, 400),
    ("5000-deep nesting", "POST", "/v1/models/tiny:predict",
     b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    ("5000-deep objects", "POST", "/v1/models/tiny:predict",
     b'{"a": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, 400),
    ("over max_batch_size", "POST", "/v1/models/tiny:predict",
     {"inputs": np.zeros((65, 28, 28, 1)).tolist()}, 413),
    ("absurd Content-Length", "POST", "/v1/models/tiny:predict", None, 400),
]


@pytest.mark.parametrize("what,method,path,body,code", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_input_gets_4xx_within_2_s(server, exported, what, method, path, body, code):
  start = time.monotonic()
  if what == "absurd Content-Length":  # a 5000-digit length, sent by hand
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
      sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                   b"9" * 5000 + b"\r\n\r\n")
      status = int(sock.recv(1 << 16).split()[1])
  else:
    status, _, answer = request(server, method, path, body)
    assert set(answer) == {"error"} and answer["error"], answer
  assert status == code, what
  assert time.monotonic() - start < 2.0
  good_request_works(server, exported)


def _raw_until_reply(sock, limit_s):
  sock.settimeout(limit_s)
  reply = b""
  try:
    while chunk := sock.recv(1 << 16):
      reply += chunk
  except (socket.timeout, ConnectionResetError):
    pass
  return reply


def test_short_body_gets_408_at_the_request_deadline(server, exported):
  with socket.create_connection((server.host, server.port), timeout=10) as sock:
    start = time.monotonic()
    sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                 b"\r\n" + b'{"instances": [')
    reply = _raw_until_reply(sock, 10)
    elapsed = time.monotonic() - start
  assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
  assert DEADLINE - 0.1 <= elapsed < DEADLINE + 2.0
  good_request_works(server, exported)


def test_one_byte_per_interval_client_is_cut_at_the_deadline(server, exported):
  """Slow-loris: bytes keep arriving, but the request deadline still ends it."""
  head = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{}   "
  with socket.create_connection((server.host, server.port), timeout=10) as sock:
    start, reply = time.monotonic(), b""
    for byte in head:  # one byte every 0.25 s: ~17 s to finish, the deadline is 1.5 s
      try:
        sock.sendall(bytes([byte]))
      except OSError:
        break
      sock.settimeout(0.25)
      try:
        reply += sock.recv(1 << 16)
      except socket.timeout:
        continue
      if reply:
        break
    elapsed = time.monotonic() - start
  assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
  assert elapsed < DEADLINE + 2.0
  good_request_works(server, exported)


def test_connections_are_bounded_and_the_excess_gets_503(server, exported):
  before = threading.active_count()
  socks = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(40)]
  try:
    time.sleep(0.5)
    assert threading.active_count() - before <= LIMITS["max_connections"]
    refused = []
    for s in socks:
      s.settimeout(0.2)
      try:
        refused.append(s.recv(1 << 16))
      except socket.timeout:
        pass
    assert len(refused) >= 40 - LIMITS["max_connections"]
    assert all(r.startswith(b"HTTP/1.1 503") and b"Retry-After: " in r for r in refused)
  finally:
    for s in socks:
      s.close()
  deadline = time.monotonic() + 10  # the held connections close at their idle timeout or EOF
  while time.monotonic() < deadline:
    try:
      good_request_works(server, exported)
      break
    except (AssertionError, OSError):
      time.sleep(0.2)
  good_request_works(server, exported)


def test_second_large_request_gets_503_retry_after_while_one_is_read(server, exported):
  big = json.dumps({"instances": images(40).tolist()}).encode()
  assert len(big) > LIMITS["large_body_bytes"]
  with socket.create_connection((server.host, server.port), timeout=10) as first:
    first.sendall(b"POST /v1/models/tiny/versions/0:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(big) + big[:1000])
    time.sleep(0.2)
    status, resp, answer = request(server, "POST", "/v1/models/tiny:predict", big)
    assert status == 503 and resp.getheader("Retry-After") == "1", answer
    first.sendall(big[1000:])
    reply = _raw_until_reply(first, 10)
  head, _, payload = reply.partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.1 200")
  length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
  logits = [p["logits"] for p in json.loads(payload[:length])["predictions"]]
  # 40 instances in chunks of 16: the same numbers as one in-process call.
  np.testing.assert_allclose(logits, reference(exported["v0"], images(40)), rtol=1e-5,
                             atol=1e-6)


def test_worker_pool_queue_full_is_503_with_retry_after():
  pool, release = WorkerPool(num_workers=1, queue_size=2, retry_after_s=3), threading.Event()
  futures = [pool.submit(release.wait, 10)]
  deadline = time.monotonic() + 5
  while pool.busy < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
  futures += [pool.submit(release.wait, 10) for _ in range(2)]  # 1 running + 2 queued
  with pytest.raises(ServingError) as refused:
    pool.submit(release.wait, 10)
  assert refused.value.status == 503 and refused.value.retry_after == 3
  release.set()
  assert all(f.result(5) for f in futures)
  pool.close()


def test_version_labels_from_the_model_config(server, exported):
  x = images(3)
  for label, version in (("stable", "v0"), ("canary", "v4")):
    status, _, answer = request(server, "POST", f"/v1/models/tiny/labels/{label}:predict",
                                {"inputs": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(answer["outputs"]["logits"], reference(exported[version], x),
                               rtol=1e-5, atol=1e-6)
  status, _, answer = request(server, "GET", "/v1/models/tiny/labels/canary")
  assert answer["model_version_status"][0]["version"] == "4"
  assert request(server, "GET", "/v1/models/tiny/labels/nope")[0] == 404


def test_prometheus_metrics_count_requests_and_latency(server, exported):
  def count(text, code):
    m = re.search(r'latmix_serving_requests_total\{model="tiny",api="predict",code="%d"\} (\d+)'
                  % code, text)
    return int(m.group(1)) if m else 0

  text = request(server, "GET", "/metrics")[2]
  before = count(text, 200)
  for _ in range(3):
    good_request_works(server, exported)
  status, resp, text = request(server, "GET", "/monitoring/prometheus/metrics")
  assert status == 200 and resp.getheader("Content-Type").startswith("text/plain")
  assert count(text, 200) == before + 3
  buckets = [int(v) for v in re.findall(
      r'latmix_serving_request_latency_seconds_bucket\{model="tiny",api="predict",le="[^"]+"\} '
      r"(\d+)", text)]
  total = int(re.search(r'latmix_serving_request_latency_seconds_count\{model="tiny",'
                        r'api="predict"\} (\d+)', text).group(1))
  assert buckets == sorted(buckets) and buckets[-1] == total >= before + 3


def test_batching_merges_concurrent_small_requests(exported):
  handle = start_server({"tiny": exported["v0"]}, log=lambda msg: None, port=0,
                        enable_batching=True, batch_timeout_micros=200_000, num_workers=8)
  try:
    xs = [images(1 + i % 2, seed=i) for i in range(8)]
    answers = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def client(i):
      barrier.wait()
      answers[i] = request(handle, "POST", "/v1/models/tiny:predict", {"inputs": xs[i].tolist()})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(xs))]
    for t in threads:
      t.start()
    for t in threads:
      t.join(30)
    for x, (status, _, answer) in zip(xs, answers):
      assert status == 200
      np.testing.assert_allclose(answer["outputs"]["logits"], reference(exported["v0"], x),
                                 rtol=1e-5, atol=1e-6)
    runs = sum(b.batches_run for b in handle.app._batchers.values())  # pylint: disable=protected-access
    assert 1 <= runs < len(xs)
  finally:
    assert handle.shutdown()


def test_batcher_splits_results_back_to_each_caller():
  calls = []

  def double(inputs):
    calls.append(len(inputs["x"]))
    return {"y": inputs["x"] * 2}

  batcher = Batcher(double, max_batch=10, timeout_s=0.3)
  out = [None] * 4
  threads = [threading.Thread(target=lambda i=i: out.__setitem__(
      i, batcher.run({"x": np.full((i + 1, 2), float(i))}))) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(5)
  for i in range(4):
    np.testing.assert_array_equal(out[i]["y"], np.full((i + 1, 2), 2.0 * i))
  assert sum(calls) == 10 and len(calls) < 4


def test_seed_and_numeric_directories_name_their_version(exported, tmp_path):
  os.symlink(exported["v0"], tmp_path / "seed_5")
  assert find_versions(str(tmp_path / "seed_5")) == {5: str(tmp_path / "seed_5")}
  assert find_versions(exported["v4"]) == {4: exported["v4"]}
  os.symlink(exported["v0"], tmp_path / "model")
  assert find_versions(str(tmp_path / "model")) == {1: str(tmp_path / "model")}


@pytest.mark.parametrize("text", ['{"a": "[[[[", "b": [1]}', r'{"a": "q\"[[", "b": [[1]]}',
                                  r'{"a": "x\\", "b": [[[1]]]}', '[' * 40 + ']' * 40, '{}'])
def test_depth_scan_ignores_brackets_inside_strings(text):
  def depth(v):
    if isinstance(v, (list, dict)):
      return 1 + max([depth(x) for x in (v.values() if isinstance(v, dict) else v)] + [0])
    return 0
  assert max_depth(text.encode()) == depth(json.loads(text))
  assert max_depth(text.encode(), block=3) == depth(json.loads(text))
