"""HTTP front end: TF Serving's REST routes with every resource bounded.

Why the standard library and not a WSGI stack: the guarantees this server must give are
about the HTTP layer itself - a 503 with `Retry-After` when the work queue is full, a 4xx
when a request is not fully received by its deadline (not a per-read timeout a client can
reset one byte at a time), a listening socket closed the moment SIGTERM arrives, and a
nonzero exit naming each request still running when the drain deadline passes. waitress
queues work without bound and times out only idle channels; gunicorn forks a process
(and a copy of TensorFlow) per worker; werkzeug's server is a development server on the
same `http.server` we use. So the parsing stays `http.server`'s, and the limits are ours:

- at most `max_connections` connection threads, and at most `max_connections_per_client`
  from one client address (so 64 idle sockets from one address cannot lock everyone out);
  past either a connection gets 503 + Retry-After at once, without a thread;
- reading a request (line, headers and body) must finish within `request_timeout_s`
  of its first byte, else 408; idle keep-alive connections close after `idle_timeout_s`;
- predicts run on a `WorkerPool` (`num_workers`, `queue_size`; full -> 503 + Retry-After);
  bodies over `large_body_bytes` also need one of `max_large_requests` slots (503 if none),
  taken before the body is read, so four 32 MB requests never sit in memory at once, and
  after each such request the freed memory goes back to the OS (`memory.trim`);
- status, metadata and /metrics are answered on the connection thread, never queued.

Shutdown (`ServerHandle.shutdown`, SIGTERM/SIGINT in `serve`): the listening socket is
shut at once, idle keep-alive connections are woken and closed, running requests get
`drain_timeout_s` to finish; any still running then is logged as dropped and `serve`
returns 1.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import threading
import time
from typing import Callable, Dict, Optional

_flushing_print = functools.partial(print, flush=True)  # lines appear even when piped

from latmix_tf.serving import repository
from latmix_tf.serving.repository import clip
from latmix_tf.serving.connection import Handler
from latmix_tf.serving.rest import ModelServer
from latmix_tf.serving.workers import WorkerPool

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port, so clients need no change when swapping servers
DEFAULT_MAX_BODY_BYTES = 32 * 2**20


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """Every limit of the server; the defaults suit one machine serving a few classifiers."""
  host: str = DEFAULT_HOST
  port: int = DEFAULT_PORT
  max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
  max_batch_size: int = 10000          # instances per request (413 beyond)
  chunk_size: int = 64                 # largest batch one model call gets
  num_workers: int = 4
  queue_size: int = 64
  max_connections: int = 64
  max_connections_per_client: int = 16  # from one address; behind a proxy, = max_connections
  request_timeout_s: float = 30.0      # whole request (line, headers, body) from its 1st byte
  idle_timeout_s: float = 30.0         # keep-alive connection with no request
  drain_timeout_s: float = 30.0
  max_json_depth: int = 32
  large_body_bytes: int = 1 << 20
  max_large_requests: int = 1
  enable_batching: bool = False
  batch_timeout_micros: int = 1000
  retry_after_s: int = 1


class _Server:
  """Listening socket, accept thread, bounded connection threads, worker pool, drain."""

  def __init__(self, app: ModelServer, config: ServerConfig, log: Callable[[str], None]):
    self.app, self.config, self.log = app, config, log
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    self.listener = socket.socket(family, socket.SOCK_STREAM)
    self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self.listener.bind((config.host, config.port))
    self.listener.listen(128)
    self.server_address = self.listener.getsockname()
    self.pool = WorkerPool(config.num_workers, config.queue_size, config.retry_after_s)
    self.large_slots = threading.BoundedSemaphore(config.max_large_requests)
    self.conn_slots = threading.BoundedSemaphore(config.max_connections)
    self.draining = False
    self._conns: Dict[Handler, bool] = {}
    self._per_client: Dict[str, int] = {}
    self._cond = threading.Condition()
    app.metrics.gauges.update({
        "latmix_serving_connections": ("Open client connections.", lambda: len(self._conns)),
        "latmix_serving_queue_depth": ("Predicts waiting for a worker.", lambda: self.pool.queued),
        "latmix_serving_busy_workers": ("Workers computing a predict.", lambda: self.pool.busy)})
    self.thread = threading.Thread(target=self._accept_loop, name="latmix-serving-accept",
                                   daemon=True)

  def track(self, handler: Handler, busy: bool):
    with self._cond:
      if handler in self._conns or busy:
        self._conns[handler] = busy

  def _accept_loop(self):
    while not self.draining:
      try:
        sock, addr = self.listener.accept()
      except OSError:
        if self.draining:
          return
        time.sleep(0.05)  # e.g. out of file descriptors: let connections finish
        continue
      with self._cond:
        mine, why = self._per_client.get(addr[0], 0), None
        if mine >= self.config.max_connections_per_client:
          why = "too many connections from your address"
        elif not self.conn_slots.acquire(blocking=False):
          why = "too many connections"
        else:
          self._per_client[addr[0]] = mine + 1
      if why:
        self._refuse(sock, why)
        continue
      threading.Thread(target=self._serve_connection, args=(sock, addr), daemon=True,
                       name="latmix-serving-conn").start()

  def _refuse(self, sock: socket.socket, why: str):
    """503 + Retry-After without reading the request: no connection slot for this client."""
    body = b'{"error": "Server busy: %s; retry later"}' % why.encode()
    try:
      sock.setblocking(False)
      try:
        sock.recv(1 << 16)  # whatever arrived, so closing does not reset our answer
      except OSError:
        pass
      sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                   b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                   % (self.config.retry_after_s, len(body), body))
      sock.shutdown(socket.SHUT_WR)
    except OSError:
      pass
    finally:
      sock.close()
      self.app.metrics.observe("", "refused", 503, 0.0)

  def _serve_connection(self, sock: socket.socket, addr):
    handler = None
    try:
      handler = Handler.__new__(Handler)
      with self._cond:
        self._conns[handler] = False
      handler.__init__(sock, addr, self)  # runs the whole connection
    except Exception:  # pylint: disable=broad-except  (one broken connection, not the server)
      pass
    finally:
      try:
        sock.close()
      except OSError:
        pass
      with self._cond:
        self._conns.pop(handler, None)
        left = self._per_client.pop(addr[0]) - 1
        if left:
          self._per_client[addr[0]] = left
        self._cond.notify_all()
      self.conn_slots.release()

  def stop_accepting(self):
    """Closes the listening socket now (safe from a signal handler)."""
    self.draining = True
    try:
      self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); new connects are refused
    except OSError:
      pass
    self.listener.close()

  def drain(self, timeout: float) -> list:
    """Stops accepting, waits for running requests; returns descriptions of dropped ones."""
    self.stop_accepting()
    self.thread.join(timeout=2)
    deadline, woken = time.monotonic() + timeout, set()
    with self._cond:
      while self._conns and time.monotonic() < deadline:
        for handler, busy in list(self._conns.items()):
          if not busy and handler not in woken:  # idle keep-alive: make its read return EOF
            woken.add(handler)
            try:
              handler.connection.shutdown(socket.SHUT_RD)
            except (OSError, AttributeError):
              pass
        self._cond.wait(0.05)
      now = time.monotonic()
      dropped = [f"{h.requestline or '(request line not received)'} from "
                 f"{h.client_address[0]}:{h.client_address[1]}, running "
                 f"{now - (h.started_at or now):.1f} s"
                 for h, busy in self._conns.items() if busy]
    self.pool.close(timeout=0.1)
    return dropped


class ServerHandle:
  """A running server: `.port`, `.url`, `.stop_accepting()`, `.shutdown()`."""

  def __init__(self, server: _Server):
    self._server = server
    self.host, self.port = server.server_address[:2]
    self.url = f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"
    self._lock, self._dropped = threading.Lock(), None

  @property
  def models(self) -> Dict[str, list]:
    return {name: sorted(v) for name, v in self._server.app.servables.items()}

  @property
  def app(self) -> ModelServer:
    return self._server.app

  def stop_accepting(self):
    self._server.stop_accepting()

  def shutdown(self, drain_timeout: Optional[float] = None) -> bool:
    """Graceful stop (idempotent). True if every request finished; see `.dropped`."""
    with self._lock:
      if self._dropped is None:
        self._dropped = self._server.drain(self._server.config.drain_timeout_s
                                           if drain_timeout is None else drain_timeout)
      return not self._dropped

  @property
  def dropped(self) -> list:
    return list(self._dropped or [])


def load_app(models, config: ServerConfig, model_config_file: Optional[str]) -> ModelServer:
  """Checks `config` and loads every model (no socket yet)."""
  models, labels = dict(models), {}
  if model_config_file:
    with open(model_config_file) as f:
      text = f.read()
    for name, path in repository.parse_model_config(text).items():
      if name in models:
        raise ValueError(f"Model {name!r} is given both directly and in {model_config_file}.")
      models[name] = path
    labels = repository.parse_version_labels(text)
  for field in ("max_body_bytes", "max_batch_size", "chunk_size", "max_connections",
                "max_connections_per_client", "request_timeout_s", "max_json_depth"):
    if getattr(config, field) <= 0:
      raise ValueError(f"{field} must be positive, got {getattr(config, field)}.")
  return ModelServer(repository.load_servables(models), labels, config.max_batch_size,
                     config.chunk_size, config.max_json_depth,
                     config.batch_timeout_micros / 1e6 if config.enable_batching else None)


def listen(app: ModelServer, config: ServerConfig,
           log: Callable[[str], None] = _flushing_print) -> ServerHandle:
  """Binds and starts serving `app` in background threads; logs `serving: listening on ...`
  last, when every request will be answered (and, under `serve`, every signal handled)."""
  server = _Server(app, config, log)
  server.thread.start()
  handle = ServerHandle(server)
  for name, versions in handle.models.items():
    labels = server.app.labels.get(name)
    log(f"serving: model {clip(name)!r} versions {versions}" + (f" labels {labels}" if labels
        else "") + f" at {handle.url}/v1/models/{name}")
  log(f"serving: listening on {handle.host} port {handle.port}")
  return handle


def start_server(models: Dict[str, str], config: Optional[ServerConfig] = None,
                 log: Callable[[str], None] = _flushing_print,
                 model_config_file: Optional[str] = None,
                 **overrides) -> ServerHandle:
  """Loads every model, binds, and serves in background threads (non-blocking).

  Args:
    models: {name: base path}; each path in any layout `repository.find_versions` accepts.
    config: the limits (`ServerConfig`); keyword `overrides` replace single fields
      (`port=0` picks a free port: read it from the handle's `.port`).
    log: called with one-line messages (startup, 500s, dropped requests).
    model_config_file: optional TF Serving model config (text proto): more models, labels.
  Returns:
    A ServerHandle; call `.shutdown()` to stop.
  """
  config = dataclasses.replace(config or ServerConfig(), **overrides)
  return listen(load_app(models, config, model_config_file), config, log)
