"""The server as a process: signals at any moment after start-up, memory after large requests.

A supervisor can only restart or alert on lost answers it is told about: the listening
socket closes at once, the request still running after `drain_timeout_s` is logged by its
request line, and the process exits 1 (the clean case, exit 0, is in test_serving.py).
`serving: listening on ...` is a promise: a SIGTERM the moment it is printed is a drain and
exit 0, never a kill, however loaded the machine. And the memory of large requests goes back
to the OS instead of piling up in malloc arenas.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import export_tiny_classifier

from latmix_tf.serving.memory import rss_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("shutdown")
  export_tiny_classifier(str(root / "tiny" / "1"), seed=0)
  return str(root / "tiny")


def start(model_dir, **limits):
  """`serve` in a child process (stdout piped, not -u); returns (process, port)."""
  args = "".join(f", {k}={v!r}" for k, v in limits.items())
  code = (f"import sys; from latmix_tf.serving import serve; "
          f"sys.exit(serve({{'tiny': {model_dir!r}}}, port=0{args}))")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  for line in proc.stdout:
    if "listening on" in line:
      return proc, int(line.rsplit(" ", 1)[1])
  raise AssertionError(f"server exited with {proc.wait()} before listening")


def test_request_past_drain_deadline_is_logged_and_exit_code_is_nonzero(model_dir):
  # "At once" is checked against the drain, not a wall-clock bound: the listening socket must
  # refuse while the process is still draining (a 4 s drain leaves a loaded machine room).
  proc, port = start(model_dir, drain_timeout_s=4.0, request_timeout_s=60.0)
  try:
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    # Half a body: the request has begun and will not finish before the drain deadline.
    slow.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                 b"\r\n" + b'{"instances": [')
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    refused_while_draining = False
    while proc.poll() is None and time.monotonic() - sent < 30:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        time.sleep(0.05)
      except (ConnectionRefusedError, ConnectionResetError):
        refused_while_draining = proc.poll() is None
        break
    assert refused_while_draining, "listening socket still open while the server drained"
    assert proc.wait(timeout=60) == 1  # bounded: a server that never exits fails, not hangs
    rest = proc.stdout.read()
    dropped = [l for l in rest.splitlines() if "dropped request" in l]
    assert len(dropped) == 1 and "POST /v1/models/tiny:predict HTTP/1.1 from 127.0.0.1:" in \
        dropped[0], rest
    slow.close()
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()


def test_sigterm_the_moment_listening_is_logged_drains_and_exits_zero(model_dir):
  """No sleep anywhere: the signal is sent as soon as the line is read. Before the fix
  the line came before gc.freeze() and the handlers, and the process died with -15."""
  proc, _ = start(model_dir)
  try:
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, rest
    assert "SIGTERM received" in rest and "serving: stopped" in rest, rest
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()


def test_memory_of_large_requests_returns_to_the_os(model_dir):
  """Three 6 MB predicts: the idle RSS afterwards stays within 5x the body above the
  idle RSS before them (without the arena cap and trim it was ~9x and still climbing)."""
  proc, port = start(model_dir)

  def post(body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/models/tiny:predict", body=body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status

  try:
    warm = json.dumps({"instances": np.zeros((64, 28, 28, 1)).tolist()}).encode()
    assert post(warm) == 200 and post(warm) == 200
    idle = rss_bytes(proc.pid)
    x = np.random.default_rng(1).integers(0, 2, (2000, 28, 28, 1))
    body = json.dumps({"instances": x.tolist()}, separators=(",", ":")).encode()
    for _ in range(3):
      assert post(body) == 200
    above = rss_bytes(proc.pid) - idle
    assert above < 5 * len(body), (above / 2**20, len(body) / 2**20)
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    proc.stdout.close()
