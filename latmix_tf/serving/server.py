"""HTTP front end: TF Serving's REST routes on the standard library's ThreadingHTTPServer.

Why stdlib: serving a handful of small classifiers needs no framework, and a server with no
new dependency runs wherever the library runs. One thread per connection (HTTP/1.1
keep-alive); the model calls themselves are thread-safe TensorFlow functions.

Shutdown is graceful: `ServerHandle.shutdown` stops accepting, closes the listening socket,
lets every request already being read or computed finish and answer (with
`Connection: close`), wakes idle keep-alive connections so they close, and returns once all
connections are gone (or `drain_timeout` passed). `serve` calls it on SIGTERM or SIGINT.
"""

from __future__ import annotations

import functools
import gc
import json
import signal
import socket
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional

from latmix_tf.serving import repository
from latmix_tf.serving.repository import ServingError
from latmix_tf.serving.rest import ModelServer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port, so clients need no change when swapping servers
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
_flushing_print = functools.partial(print, flush=True)


class _Handler(BaseHTTPRequestHandler):
  """Reads one request at a time, hands it to ModelServer, writes the JSON answer."""

  protocol_version = "HTTP/1.1"
  server_version = "latmix-serving"
  timeout = 60  # seconds a keep-alive connection may idle or a body may take to arrive
  # Headers and body leave in two writes; with Nagle on, the body waits for the client's
  # delayed ACK (~40 ms on Linux) and caps a keep-alive client at ~20 requests/s.
  disable_nagle_algorithm = True

  def setup(self):
    super().setup()
    self.server.track(self, busy=False)

  def finish(self):
    try:
      super().finish()
    finally:
      self.server.untrack(self)

  def parse_request(self):
    self.server.track(self, busy=True)  # a request line arrived: drain must wait for it
    return super().parse_request()

  def handle_one_request(self):
    try:
      super().handle_one_request()
    finally:
      self.server.track(self, busy=False)
      if self.server.draining:
        self.close_connection = True

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    pass  # no access log: errors that matter are logged by _dispatch

  def send_error(self, code, message=None, explain=None):
    """Protocol errors (bad request line, unknown HTTP verb) also get TF Serving's JSON body."""
    self._send_json(code, {"error": message or HTTPStatus(code).phrase})

  def do_GET(self):
    self._dispatch("GET")

  def do_POST(self):
    self._dispatch("POST")

  def do_PUT(self):
    self._dispatch("PUT")

  def do_DELETE(self):
    self._dispatch("DELETE")

  def _read_body(self) -> bytes:
    if self.headers.get("Transfer-Encoding"):
      self.close_connection = True
      raise ServingError(411, "Transfer-Encoding is not supported; send Content-Length")
    length = self.headers.get("Content-Length")
    if length is None:
      return b""
    if not length.strip().isdigit():
      self.close_connection = True
      raise ServingError(400, f"Invalid Content-Length: {length!r}")
    n = int(length)
    if n > self.server.max_body_bytes:  # refused before a byte of the body is read
      self._unread = n
      raise ServingError(413, self._too_large(n))
    body = self.rfile.read(n)
    if len(body) < n:
      self.close_connection = True
      raise ServingError(400, f"Body ended after {len(body)} of {n} bytes")
    return body

  def _too_large(self, n: int) -> str:
    return (f"Request body of {n} bytes exceeds the server's limit of "
            f"{self.server.max_body_bytes} bytes (max_body_bytes); send fewer instances")

  def handle_expect_100(self):
    """`Expect: 100-continue` (curl sends it for bodies over 1 KiB): refuse an oversized body
    before the client uploads it, instead of inviting it with 100 Continue."""
    length = self.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > self.server.max_body_bytes:
      self.close_connection = True
      self._send_json(413, {"error": self._too_large(int(length))})
      return False
    return super().handle_expect_100()

  def _dispatch(self, method: str):
    self._unread = 0
    try:
      body = self._read_body()
      status, answer = self.server.app.handle(method, self.path, body)
    except ServingError as e:
      status, answer = e.status, {"error": e.message}
    except Exception as e:  # pylint: disable=broad-except  (a bad request must not kill the server)
      self.server.log(f"serving: 500 on {method} {self.path}:\n{traceback.format_exc()}")
      status, answer = 500, {"error": f"Internal error: {type(e).__name__}: {e}"}
    self._send_json(status, answer)
    if self._unread:
      self._discard_unread(self._unread)

  def _send_json(self, status: int, answer: dict):
    data = json.dumps(answer).encode("utf-8")
    if self._unread_pending() or self.server.draining:
      self.close_connection = True
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)

  def _unread_pending(self) -> bool:
    return bool(getattr(self, "_unread", 0))

  def _discard_unread(self, n: int, seconds: float = 2.0):
    """Reads and drops an oversized body for a moment, so the client sees our 413 (closing a
    socket with unread input sends a reset that can destroy the answer in flight)."""
    self.connection.settimeout(0.5)
    deadline = time.monotonic() + seconds
    try:
      while n > 0 and time.monotonic() < deadline:
        chunk = self.rfile.read1(min(n, 1 << 16))
        if not chunk:
          break
        n -= len(chunk)
    except OSError:
      pass


class _HTTPServer(ThreadingHTTPServer):
  """ThreadingHTTPServer that knows its connections, so shutdown can drain them."""

  daemon_threads = True  # a stuck client must not keep the process alive past drain_timeout
  request_queue_size = 128

  def __init__(self, address, app: ModelServer, max_body_bytes: int, log: Callable[[str], None]):
    self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    self.app, self.max_body_bytes, self.log = app, max_body_bytes, log
    self.draining = False
    self._conns: Dict[_Handler, bool] = {}  # handler -> busy with a request
    self._cond = threading.Condition()
    super().__init__(address, _Handler)

  def track(self, handler: _Handler, busy: bool):
    with self._cond:
      self._conns[handler] = busy

  def untrack(self, handler: _Handler):
    with self._cond:
      self._conns.pop(handler, None)
      self._cond.notify_all()

  def drain(self, timeout: float) -> bool:
    """Stops accepting and waits for open connections; True if all closed in time."""
    with self._cond:
      self.draining = True
    self.shutdown()  # ends serve_forever
    self.server_close()  # closes the listening socket
    deadline, woken = time.monotonic() + timeout, set()
    with self._cond:
      while self._conns and time.monotonic() < deadline:
        for handler, busy in list(self._conns.items()):
          if not busy and handler not in woken:  # idle keep-alive: make its read return EOF
            woken.add(handler)
            try:
              handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
              pass
        self._cond.wait(0.1)
      return not self._conns


class ServerHandle:
  """A running server: `.port`, `.url`, `.shutdown()`."""

  def __init__(self, httpd: _HTTPServer, thread: threading.Thread):
    self._httpd, self._thread = httpd, thread
    self.host, self.port = httpd.server_address[:2]
    self.url = f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"
    self._lock, self._done = threading.Lock(), None

  @property
  def models(self) -> Dict[str, list]:
    return {name: sorted(v) for name, v in self._httpd.app.servables.items()}

  def shutdown(self, drain_timeout: float = 30.0) -> bool:
    """Graceful stop (idempotent). Returns True if every in-flight request finished."""
    with self._lock:
      if self._done is None:
        self._done = self._httpd.drain(drain_timeout)
        self._thread.join(timeout=5)
      return self._done


def start_server(models: Dict[str, str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 log: Callable[[str], None] = _flushing_print,
                 model_config_file: Optional[str] = None) -> ServerHandle:
  """Loads every model, binds, and serves in a background thread (non-blocking).

  Args:
    models: {name: base path}; each path in any layout `repository.find_versions` accepts.
    host: interface to bind; the loopback default keeps models off the network.
    port: TCP port; 0 picks a free one (read it from the handle's `.port`).
    max_body_bytes: larger request bodies are refused with 413 before they are read.
    log: called with one-line messages (startup, 500s).
    model_config_file: optional TF Serving model config (text proto) adding more models.
  Returns:
    A ServerHandle; call `.shutdown()` to stop.
  """
  models = dict(models)
  if model_config_file:
    with open(model_config_file) as f:
      for name, path in repository.parse_model_config(f.read()).items():
        if name in models:
          raise ValueError(f"Model {name!r} is given both directly and in {model_config_file}.")
        models[name] = path
  if max_body_bytes <= 0:
    raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}.")
  app = ModelServer(repository.load_servables(models))
  httpd = _HTTPServer((host, port), app, max_body_bytes, log)
  thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                            name="latmix-serving", daemon=True)
  thread.start()
  handle = ServerHandle(httpd, thread)
  for name, versions in handle.models.items():
    log(f"serving: model {name!r} versions {versions} at {handle.url}/v1/models/{name}")
  log(f"serving: listening on {handle.host} port {handle.port}")
  return handle


def serve(models: Dict[str, str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          log: Callable[[str], None] = _flushing_print,
          model_config_file: Optional[str] = None, drain_timeout: float = 30.0) -> None:
  """Serves until SIGTERM or SIGINT (Ctrl-C), then shuts down gracefully and returns.

  Arguments as in `start_server`. Must run in the main thread (signal handlers live there).
  It owns the process: besides the signal handlers it calls `gc.freeze()` once the models
  are loaded. TensorFlow leaves ~350k Python objects that every full garbage collection
  would walk (~200 ms on 2 cores, stalling every request in flight about once a second
  under load, since each JSON request allocates thousands of lists); frozen, they are skipped.
  """
  handle = start_server(models, host, port, max_body_bytes, log, model_config_file)
  gc.collect()
  gc.freeze()
  stop = threading.Event()
  received = []

  def on_signal(signum, _frame):
    received.append(signal.Signals(signum).name)
    stop.set()

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    while not stop.wait(0.5):
      pass
    log(f"serving: {received[0]} received, finishing in-flight requests")
  finally:
    clean = handle.shutdown(drain_timeout)
    for s, handler in previous.items():
      signal.signal(s, handler)
  log("serving: stopped" + ("" if clean else f" (some connections still open after "
                                               f"{drain_timeout:.0f} s were dropped)"))
