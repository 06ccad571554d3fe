"""SIGTERM with a request that outlives the drain deadline: the server must say so.

A supervisor can only restart or alert on lost answers it is told about: the listening
socket closes at once, the request still running after `drain_timeout_s` is logged by its
request line, and the process exits 1 (the clean case, exit 0, is in test_serving.py).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import keras
import tensorflow as tf

from latmix_tf import export
from latmix_tf.models.classifiers import SmallCNN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_request_past_drain_deadline_is_logged_and_exit_code_is_nonzero(tmp_path):
  keras.utils.set_random_seed(0)
  model = SmallCNN(widths=(4, 8), dense_units=16, dropout=0.0)
  model(tf.zeros([1, 28, 28, 1]))
  path = export.export_classifier(model, str(tmp_path / "tiny" / "1"), (28, 28, 1))
  code = ("import sys; from latmix_tf.serving import serve; "
          f"sys.exit(serve({{'tiny': {os.path.dirname(path)!r}}}, port=0, drain_timeout_s=1.0, "
          "request_timeout_s=60.0))")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # not -u: piped
  try:
    deadline, port = time.monotonic() + 120, None
    for line in proc.stdout:
      if "listening on" in line:
        port = int(line.rsplit(" ", 1)[1])
        break
      assert time.monotonic() < deadline
    assert port, f"server exited with {proc.wait()} before listening"
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    # Half a body: the request has begun and will not finish before the drain deadline.
    slow.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                 b"\r\n" + b'{"instances": [')
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    refused = False
    while time.monotonic() - sent < 3:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        time.sleep(0.05)
      except (ConnectionRefusedError, ConnectionResetError):
        refused = True
        break
    assert refused and time.monotonic() - sent < 1.5, "listening socket still open"
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 1
    assert time.monotonic() - sent < 10
    dropped = [l for l in rest.splitlines() if "dropped request" in l]
    assert len(dropped) == 1 and "POST /v1/models/tiny:predict HTTP/1.1 from 127.0.0.1:" in \
        dropped[0], rest
    slow.close()
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.stdout.close()
