"""The server against hostile clients, from outside over loopback.

Each case is an attack that used to work: a body inside the size limit whose one element
builds a gigabyte of lists, a Content-Length of '²', conflicting Content-Length headers
smuggling a second request, one address holding every connection, made-up model names
growing /metrics, answers without a status line, errors echoing a megabyte or listing
what is served. Assertions are on answers, framing and memory, never on timings, so they
hold on a loaded machine. Each test ends by checking that a good request still works.
"""

import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from conftest import export_tiny_classifier

from latmix_tf.serving import ServingError, start_server
from latmix_tf.serving.jsonbody import BLOCK, decode_request
from latmix_tf.serving.stacking import Budget

LIMITS = dict(port=0, max_body_bytes=8 << 20, max_batch_size=64, request_timeout_s=5.0,
              idle_timeout_s=5.0, max_connections=6, max_connections_per_client=3,
              num_workers=2, queue_size=4, large_body_bytes=16 << 20, drain_timeout_s=5)
IMAGE = Budget(np.float32, 784, 813)  # one 28x28x1 instance: 784 numbers in 813 arrays


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  root = tmp_path_factory.mktemp("hostile")
  export_tiny_classifier(str(root / "tiny" / "0"), seed=3)
  export_tiny_classifier(str(root / "tiny" / "4"), seed=4)
  config = root / "models.config"
  config.write_text(f"model_config_list {{ config {{ name: 'tiny' base_path: '{root / 'tiny'}'"
                    f" version_labels {{ key: 'stable' value: 0 }} }} }}")
  handle = start_server({}, log=lambda msg: None, model_config_file=str(config), **LIMITS)
  yield handle
  assert handle.shutdown()


def request(server, method, path, body=None):
  """One request on a fresh connection, as a well-behaved client makes it: a refusal by the
  per-client cap (3 here) is retried. The server counts a connection until its thread has seen
  the close, which on a loaded machine can lag behind the client's previous `close()`."""
  data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
  deadline = time.monotonic() + 30
  while True:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
      conn.request(method, path, body=data)
      resp = conn.getresponse()
      raw = resp.read()
    except (BrokenPipeError, ConnectionResetError):  # refused before the body was sent
      if time.monotonic() > deadline:
        raise
      time.sleep(0.1)
      continue
    finally:
      conn.close()
    if resp.status == 503 and b"from your address" in raw and time.monotonic() < deadline:
      time.sleep(0.1)
      continue
    return resp.status, json.loads(raw) if "json" in resp.getheader("Content-Type", "") else \
        raw.decode()


def raw(server, data: bytes, until_close=False) -> bytes:
  """Sends bytes on a fresh connection; returns what was read until the first whole answer
  (or, with `until_close`, until the server closed the connection). A refusal by the
  per-client cap is retried, as in `request`."""
  deadline = time.monotonic() + 30
  while True:
    try:
      reply = _raw_once(server, data, until_close)
    except (BrokenPipeError, ConnectionResetError):  # refused while still sending
      if time.monotonic() > deadline:
        raise
      time.sleep(0.1)
      continue
    if not (reply.startswith(b"HTTP/1.1 503") and b"from your address" in reply) or \
        time.monotonic() > deadline:
      return reply
    time.sleep(0.1)


def _raw_once(server, data, until_close):
  with socket.create_connection((server.host, server.port), timeout=10) as sock:
    sock.sendall(data)
    reply = b""
    try:
      while chunk := sock.recv(1 << 16):
        reply += chunk
        head, sep, body = reply.partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        if not until_close and sep and length and len(body) >= int(length.group(1)):
          break
    except (socket.timeout, ConnectionResetError):
      pass
  return reply


def good_request_works(server):
  x = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
  status, answer = request(server, "POST", "/v1/models/tiny:predict", {"instances": x.tolist()})
  assert status == 200 and len(answer["predictions"]) == 2, answer


# --- item 1: work and memory bounded per element ------------------------------------------

HUGE_ELEMENTS = [("2M empty arrays", b'{"instances": [[' + b"[]," * 2_000_000 + b"[]]]}"),
                 ("1.5M numbers", b'{"instances": [[' + b"0.5," * 1_500_000 + b"0.5]]}")]


@pytest.mark.parametrize("what,body", HUGE_ELEMENTS, ids=[h[0] for h in HUGE_ELEMENTS])
def test_one_huge_element_is_refused_before_it_is_decoded(server, what, body):
  """One element of millions of values: refused as larger than an instance, with the
  Python memory of the whole request a small multiple of the body (decoding it whole
  made ~30x the body in lists)."""
  tracemalloc.start()
  try:
    status, answer = request(server, "POST", "/v1/models/tiny:predict", body)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert status == 400
  assert peak < 3 * len(body) + (16 << 20), (what, peak / len(body))
  assert "larger than one instance" in answer["error"], answer
  good_request_works(server)


def test_oversized_element_is_refused_within_one_block_not_at_the_end():
  """The text after the first block is never looked at: an element that would end in a
  parse error 6 MB later is refused for its size first."""
  body = b'{"instances": [[' + b"[]," * 2_000_000  # no end: json would fail at the end
  with pytest.raises(ServingError) as refused:
    decode_request(body, lambda request, name: IMAGE, 64)
  assert refused.value.status == 400 and "larger than one instance" in refused.value.message
  assert len(body) > 20 * BLOCK


def test_elements_that_fit_an_instance_decode_in_every_json_layout():
  x = np.random.default_rng(1).random((3, 28, 28, 1)).astype(np.float32)
  for text in (json.dumps({"instances": x.tolist()}),
               json.dumps({"signature_name": "serving_default", "instances": x.tolist()},
                          indent=4),
               json.dumps({"inputs": {"images": x.tolist()}}, separators=(",", ":"))):
    request = decode_request(text.encode(), lambda request, name: IMAGE, 64)
    got = request["instances"].array if "instances" in request else \
        request["inputs"]["images"].array
    np.testing.assert_array_equal(got, x)


# --- item 2: Content-Length and versions are ASCII digits ---------------------------------

@pytest.mark.parametrize("length", ["\u00b2", "\u00b9", "1\u00b2"])
@pytest.mark.parametrize("path", ["/v1/models/tiny:predict", "/v1/models/tiny", "/metrics"])
def test_non_ascii_digit_content_length_is_400_not_500(server, length, path):
  head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
  for expect in ("", "Expect: 100-continue\r\n"):
    text = head + expect + "\r\n"
    reply = raw(server, text.encode("latin-1" if max(map(ord, text)) < 256 else "utf-8"))
    assert reply.startswith(b"HTTP/1.1 400 "), (length, path, expect, reply[:300])
  good_request_works(server)


@pytest.mark.parametrize("digit", ["%D9%A4", "%EF%BC%94"])  # Arabic-Indic and full-width 4
def test_version_is_ascii_digits_only(server, digit):
  assert request(server, "GET", "/v1/models/tiny/versions/4")[0] == 200
  assert request(server, "GET", f"/v1/models/tiny/versions/{digit}")[0] == 404


# --- item 3: conflicting Content-Length ---------------------------------------------------

def test_conflicting_content_lengths_are_400_and_nothing_is_smuggled(server):
  smuggled = b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
  body = b"{}" + smuggled
  reply = raw(server, b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body, until_close=True)
  assert reply.startswith(b"HTTP/1.1 400 ") and b"Conflicting Content-Length" in reply, reply
  assert reply.count(b"HTTP/1.1 ") == 1, reply  # the smuggled GET was not answered
  same = raw(server, b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
  assert same.startswith(b"HTTP/1.1 200 "), same  # equal values are one length (RFC 9112)
  good_request_works(server)


# --- item 4: one address cannot take every connection -------------------------------------

def test_one_address_holding_connections_does_not_lock_others_out(server):
  held = [socket.create_connection((server.host, server.port), timeout=5,
                                   source_address=("127.0.0.2", 0)) for _ in range(6)]
  try:
    for s in held:  # half-sent requests, never finished
      s.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n")
    refused, waiting = [], list(held)
    deadline = time.monotonic() + 10  # the 503s come at once; 10 s only bounds a stuck test
    while len(refused) < 6 - LIMITS["max_connections_per_client"] and \
        time.monotonic() < deadline:
      for s in select.select(waiting, [], [], 0.5)[0]:
        refused.append(s.recv(1 << 16))
        waiting.remove(s)
    assert len(refused) == 6 - LIMITS["max_connections_per_client"], refused
    assert all(r.startswith(b"HTTP/1.1 503") and b"Retry-After" in r for r in refused)
    good_request_works(server)  # from 127.0.0.1, while 127.0.0.2 holds its 3
  finally:
    for s in held:
      s.close()


# --- item 5: bounded metrics --------------------------------------------------------------

def test_unknown_names_do_not_grow_metrics_and_protocol_errors_are_counted(server):
  def protocol(text, code):
    m = re.search(r'latmix_serving_requests_total\{model="",api="protocol",code="%d"\} (\d+)'
                  % code, text)
    return int(m.group(1)) if m else 0

  before = request(server, "GET", "/metrics")[1]
  for i in range(20):
    assert request(server, "GET", f"/v1/models/made-up-{i}-{'x' * 2000}")[0] == 404
    assert request(server, "POST", f"/v1/models/tiny:verb{i}", b"{}")[0] == 404
  raw(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")  # 414
  raw(server, b"GET / HTTP/3.0\r\n\r\n")  # 505
  raw(server, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")  # 501
  after = request(server, "GET", "/metrics")[1]
  assert "made-up" not in after and "verb" not in after
  assert len(after) < len(before) + 8000, (len(before), len(after))
  for code in (414, 505, 501):
    assert protocol(after, code) == protocol(before, code) + 1, code
  good_request_works(server)


# --- item 6: protocol edges and echoes ----------------------------------------------------

@pytest.mark.parametrize("line,code", [(b"HELLO", 400), (b"GET /", 400), (b"GET / HTTP/x", 400),
                                       (b"PRI * HTTP/2.0\r\n\r\nSM", 505)])
def test_protocol_errors_have_a_status_line(server, line, code):
  reply = raw(server, line + b"\r\n\r\n")
  assert reply.startswith(b"HTTP/1.1 %d " % code), reply[:200]
  head, _, body = reply.partition(b"\r\n\r\n")
  assert set(json.loads(body)) == {"error"}, reply


def test_http10_keep_alive_is_echoed(server):
  with socket.create_connection((server.host, server.port), timeout=10) as sock:
    for _ in range(2):  # the second request on the same connection is answered too
      sock.sendall(b"GET /v1/models/tiny HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
      data = b""
      while b"\r\n\r\n" not in data:
        data += sock.recv(1 << 16)
      head, _, body = data.partition(b"\r\n\r\n")
      length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
      while len(body) < length:  # the whole answer, so the next read starts at a status line
        body += sock.recv(1 << 16)
      assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
      assert b"Connection: keep-alive" in head, head


def test_errors_echo_bounded_strings_and_do_not_list_what_is_served(server):
  x = np.zeros((1, 28, 28, 1)).tolist()
  for name in ("s" * 60_000, "s" * 1_000_000):  # under and over the 64 KiB value limit
    status, answer = request(server, "POST", "/v1/models/tiny:predict",
                             {"signature_name": name, "instances": x})
    assert status == 400 and len(answer["error"]) < 500, len(answer["error"])
  for path in ("/v1/models/nope", "/v1/models/tiny/versions/9", "/v1/models/tiny/labels/nope",
               "/v1/models/" + "n" * 5000):
    status, answer = request(server, "GET", path)
    assert status == 404 and len(answer["error"]) < 300, answer
    assert not {"served", "stable", "[0, 4]"} & set(re.findall(r"served|stable|\[0, 4\]",
                                                               answer["error"])), answer
  good_request_works(server)


def test_per_client_cap_is_a_checked_flag():
  """`--max_connections_per_client` reaches the server's checks from the command line."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, "main.py", "--serve", "--model_base_path=x=/nonexistent",
                         "--max_connections_per_client=0"], cwd=repo, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
  assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
  assert "max_connections_per_client=0" in errors[0] and "nknown" not in errors[0], errors
