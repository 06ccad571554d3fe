"""One client connection: requests read under a deadline, answered in order.

Why a deadline and not a socket timeout: a timeout applies per read, so a client sending
one byte a second keeps a thread forever. Here the first byte of a request starts its
clock (`request_timeout_s`); every later read waits at most until then, and a request not
fully received in time gets 408 and the connection closes. Between requests a keep-alive
connection may idle for `idle_timeout_s`. Requests and answers keep TF Serving's JSON
shape, protocol errors included; a predict is computed on the server's worker pool, every
other route on this thread.

Framing is strict, because a proxy in front (the authentication the server lacks) must
frame requests exactly as we do: Content-Length is ASCII digits only (`str.isdigit` also
accepts '²' and '٣'), several Content-Length values that differ are a 400 that closes the
connection (RFC 9112 6.3; else the rest of a body would run as a smuggled request), and
HTTP/0.9 or an unknown version is answered with a status line all the same. Every answer,
protocol errors included, is counted in /metrics; model labels there are served names
only, so a client cannot grow /metrics with made-up names.
"""

from __future__ import annotations

import io
import re
import time
import traceback
from http.server import BaseHTTPRequestHandler
from typing import Optional

from latmix_tf.serving import memory, metrics
from latmix_tf.serving.repository import ServingError, clip
from latmix_tf.serving.rest import encode_json
from latmix_tf.serving.routes import metric_labels

_LENGTH = re.compile(r"[0-9]{1,15}", re.ASCII)


def content_length(values) -> int:
  """The body length from the Content-Length header values; ServingError(400) unless every
  value (comma lists included) is the same run of 1-15 ASCII digits."""
  found = {v.strip() for value in values for v in value.split(",")}
  if len(found) > 1:
    raise ServingError(400, "Conflicting Content-Length values; send exactly one")
  length = found.pop() if found else "0"
  if not _LENGTH.fullmatch(length):
    raise ServingError(400, f"Invalid Content-Length: {length[:40]!r} (ASCII digits only)")
  return int(length)


class _Expired(Exception):
  """The request deadline passed while reading (`started`: a request had begun)."""

  def __init__(self, started: bool):
    super().__init__("request deadline passed")
    self.started = started


class _DeadlineReader(io.RawIOBase):
  """A socket's read side where each recv waits at most until the connection's deadline."""

  def __init__(self, handler: "Handler"):
    super().__init__()
    self._h = handler

  def readable(self):
    return True

  def readinto(self, buf):
    h = self._h
    started = h.deadline is not None
    limit = (h.deadline - time.monotonic()) if started else h.server.config.idle_timeout_s
    if limit <= 0:
      raise _Expired(True)
    h.connection.settimeout(limit)
    try:
      n = h.connection.recv_into(buf)
    except TimeoutError:
      raise _Expired(started) from None
    except OSError:
      return 0
    if n and not started:
      h.start_request()
    return n


class Handler(BaseHTTPRequestHandler):
  """One connection: reads requests under a deadline, answers them in order."""

  protocol_version = "HTTP/1.1"
  server_version = "latmix-serving"
  disable_nagle_algorithm = True  # else the body waits ~40 ms for the client's delayed ACK
  deadline: Optional[float] = None
  _counted = False

  def setup(self):
    super().setup()
    self.rfile = io.BufferedReader(_DeadlineReader(self), 1 << 16)
    self.started_at, self.deadline, self.requestline = None, None, ""

  def start_request(self):
    self.started_at = time.monotonic()
    self.deadline = self.started_at + self.server.config.request_timeout_s
    self.server.track(self, busy=True)

  def handle_one_request(self):
    self.deadline, self._replied, self._counted = None, False, False
    self._admitted, self._holds_large = None, False
    # parse_request sets these; an answer (408) may be due before it ran.
    self.command, self.request_version, self.requestline = None, "HTTP/1.1", ""
    try:
      self.raw_requestline = self.rfile.readline(65537)
      if len(self.raw_requestline) > 65536:
        self.requestline, self.request_version, self.command = "", "", ""
        self.send_error(414)
        return
      if not self.raw_requestline:
        self.close_connection = True
        return
      if not self.parse_request():
        return
      method = getattr(self, "do_" + self.command, None)
      if method is None:
        self.send_error(501, f"Unsupported method ({self.command!r})")
        return
      method()
      self.wfile.flush()
    except _Expired as e:
      self.close_connection = True
      if e.started and not self._replied:
        self._send(408, {"error": f"Request not received within the deadline of "
                                  f"{self.server.config.request_timeout_s:g} s"})
    except OSError:
      self.close_connection = True
    finally:
      self.server.track(self, busy=False)
      if self.server.draining:
        self.close_connection = True

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    pass  # no access log: /metrics counts requests, errors that matter are logged

  def parse_request(self):
    """http.server's parsing, less HTTP/0.9 (a bare `GET /` would be answered without a
    status line, which no HTTP/1.x client can read)."""
    if not super().parse_request():
      return False
    if self.request_version == "HTTP/0.9":
      self.send_error(400, "Bad request line: HTTP/0.9 is not supported; send HTTP/1.1")
      return False
    return True

  def send_error(self, code, message=None, explain=None):
    """Protocol errors (bad request line, unknown HTTP verb) also get TF Serving's JSON body,
    after a status line whatever version the client named, and are counted in /metrics."""
    self.close_connection = True
    if not re.fullmatch(r"HTTP/1\.[01]", self.request_version or ""):
      self.request_version = "HTTP/1.1"  # http.server writes no status line for HTTP/0.9
    self._send(code, {"error": clip(message or f"HTTP {code}", 200)})

  def _count(self, model: str, api: str, status: int, start: Optional[float] = None):
    """Records one answer in /metrics (once per request)."""
    if not self._counted:
      self._counted = True
      begun = start if start is not None else (self.started_at or time.monotonic())
      self.server.app.metrics.observe(model, api, status, time.monotonic() - begun)

  def do_GET(self):
    self._dispatch("GET")

  def do_POST(self):
    self._dispatch("POST")

  def do_PUT(self):
    self._dispatch("PUT")

  def do_DELETE(self):
    self._dispatch("DELETE")

  def handle_expect_100(self):
    """Refuse before `100 Continue` whatever would be refused once the body arrived."""
    try:
      self._admit()
    except ServingError as e:
      self.close_connection = True
      self._send(e.status, {"error": e.message}, e.retry_after)
      return False
    return super().handle_expect_100()

  def _admit(self) -> int:
    """Checks the framing headers; takes a large-request slot. Returns the body length."""
    if getattr(self, "_admitted", None) is not None:
      return self._admitted
    if self.headers.get("Transfer-Encoding"):
      raise ServingError(411, "Transfer-Encoding is not supported; send Content-Length")
    n = content_length(self.headers.get_all("Content-Length") or [])
    config = self.server.config
    if n > config.max_body_bytes:
      raise ServingError(413, f"Request body of {n} bytes exceeds the server's limit of "
                              f"{config.max_body_bytes} bytes (max_body_bytes); send fewer "
                              f"instances")
    if n > config.large_body_bytes:
      if not self.server.large_slots.acquire(blocking=False):
        raise ServingError(503, f"Server busy with {config.max_large_requests} request(s) over "
                                f"{config.large_body_bytes} bytes; retry later",
                           retry_after=config.retry_after_s)
      self._holds_large = True
    self._admitted = n
    return n

  def _dispatch(self, method: str):
    start, model, api = time.monotonic(), "", "other"
    status, answer, retry = 500, {"error": "internal error"}, None
    try:
      model, api = metric_labels(method, self.path, self.server.app.servables)
      try:
        n = self._admit()
        body = bytearray(n)
        if n and self.rfile.readinto(memoryview(body)) < n:
          self.close_connection = True
          raise ServingError(400, "Body ended before Content-Length bytes arrived")
        self.deadline = None  # received in time: computing is not bounded by the read deadline
        if api == "predict":
          holder = [body]
          del body
          status, answer = self.server.pool.submit(self.server.app.handle, method,
                                                   self.path, holder).result()
        else:
          status, answer = self.server.app.handle(method, self.path, bytes(body))
      except ServingError as e:
        status, answer, retry = e.status, {"error": e.message}, e.retry_after
        if self._admitted is None:
          self.close_connection = True  # the body was not read: the stream is out of step
      except _Expired:
        status = 408
        raise
      except Exception as e:  # pylint: disable=broad-except  (a bad request must not kill the server)
        self.server.log(f"serving: 500 on {method} {self.path[:200]}:\n{traceback.format_exc()}")
        status, answer = 500, {"error": f"Internal error: {type(e).__name__}: {e}"}
      large, self._holds_large = self._holds_large, False
      if large:  # free before answering: the client's next large request must find it free
        self.server.large_slots.release()
      self._send(status, answer, retry, (model, api), start)
      if self._admitted is None:
        self._discard()
      if large:
        answer = None  # the last reference to a large answer: free it, then return the pages
        memory.trim()
    finally:
      if self._holds_large:
        self.server.large_slots.release()
      self._count(model, api, status, start)

  def _discard(self, seconds: float = 2.0):
    """Reads and drops an unread body for a moment, so the client sees our refusal (closing a
    socket with unread input sends a reset that can destroy the answer in flight)."""
    try:
      left = content_length(self.headers.get_all("Content-Length") or [])
    except ServingError:
      left = 1 << 16  # framing unknown: drain a little, the connection closes anyway
    self.deadline = time.monotonic() + seconds
    try:
      while left > 0:
        chunk = self.rfile.read1(min(left, 1 << 16))
        if not chunk:
          break
        left -= len(chunk)
    except (_Expired, OSError):
      pass

  def _send(self, status: int, answer, retry_after: Optional[int] = None,
            labels: tuple = ("", "protocol"), start: Optional[float] = None):
    """Writes one answer, counted in /metrics under `labels` (model, API) first: a client
    that has its answer and then reads /metrics must find it counted."""
    self._count(*labels, status, start)
    if isinstance(answer, str):
      data, ctype = answer.encode("utf-8"), metrics.CONTENT_TYPE
    else:
      data, ctype = encode_json(answer), "application/json"
    if self.server.draining:
      self.close_connection = True
    self._replied = True
    self.connection.settimeout(self.server.config.request_timeout_s)  # a client that never reads
    self.send_response(status)
    self.send_header("Content-Type", ctype)
    self.send_header("Content-Length", str(len(data)))
    if retry_after is not None:
      self.send_header("Retry-After", str(retry_after))
    if self.close_connection:
      self.send_header("Connection", "close")
    elif self.request_version == "HTTP/1.0":  # HTTP/1.0 closes unless keep-alive is echoed
      self.send_header("Connection", "keep-alive")
    self.end_headers()
    self.wfile.write(data)
    self.wfile.flush()
