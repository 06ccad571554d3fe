"""Hostile clients for `serving_load.py`: what other clients see while the server is attacked.

Why: a limit that holds for the attacker (a 400, a 503) is not enough if everyone else waits
or is refused meanwhile. Each scenario runs the well-behaved one-image load of
`serving_load.run_load` (8 keep-alive clients from 127.0.0.1) while an attacker works, and
records their p99 and errors, the attacker's answers and the server's peak RSS:

- `hostile_arrays` / `hostile_numbers`: back to back, a 30.9 MB body (under the 32 MiB limit)
  that is ONE instance of 10.3 million empty arrays, or of 7.8 million numbers;
- `lockout`: from another address (127.0.0.2), 64 connections that send half a request
  and never finish, each reopened as soon as the server closes or refuses it.
"""

import http.client
import select
import socket
import threading
import time


def hostile_bodies():
  """The two hostile bodies: one huge array of empty arrays, one of numbers (30.9 MB each)."""
  return {"hostile_arrays": b'{"instances": [[' + b"[]," * 10_300_000 + b"[]]]}",
          "hostile_numbers": b'{"instances": [[' + b"0.5," * 7_800_000 + b"0.5]]}"}


class PeakRss:
  """Samples a process's RSS every 5 ms in a thread; `.peak` is the highest seen."""

  def __init__(self, pid, rss):
    self._pid, self._rss, self._stop = pid, rss, threading.Event()
    self.peak = rss(pid)
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, self._rss(self._pid))
      time.sleep(0.005)

  def stop(self):
    self._stop.set()
    self._thread.join()
    return self.peak


def run_hostile_body(url_host_port, name, body, load):
  """`load()` (the well-behaved clients) while `body` is posted back to back."""
  stop, seen = threading.Event(), {"statuses": {}, "seconds": []}

  def attacker():
    while not stop.is_set():
      conn = http.client.HTTPConnection(*url_host_port, timeout=120)
      start = time.perf_counter()
      try:
        conn.request("POST", f"/v1/models/{name}:predict", body=body)
        resp = conn.getresponse()
        resp.read()
        key = str(resp.status)
      except (OSError, http.client.HTTPException) as e:
        key = type(e).__name__
      finally:
        conn.close()
      seen["statuses"][key] = seen["statuses"].get(key, 0) + 1
      seen["seconds"].append(time.perf_counter() - start)

  thread = threading.Thread(target=attacker, daemon=True)
  thread.start()
  time.sleep(1.0)  # the first hostile body is in flight
  result = load()
  stop.set()
  thread.join(120)
  secs = sorted(seen["seconds"])
  result["attacker"] = {"body_bytes": len(body), "statuses": seen["statuses"],
                        "median_answer_s": round(secs[len(secs) // 2], 3) if secs else None}
  return result


def run_lockout(host_port, load, sockets=64, source="127.0.0.2"):
  """`load()` while `sockets` half-sent connections from `source` are held and reopened."""
  stop, counts = threading.Event(), {"opened": 0, "refused_503": 0, "closed_other": 0}
  head = b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"

  def attacker():
    held = []
    while not stop.is_set():
      while len(held) < sockets and not stop.is_set():
        try:
          s = socket.create_connection(host_port, timeout=5, source_address=(source, 0))
          s.sendall(head)
          held.append(s)
          counts["opened"] += 1
        except OSError:
          time.sleep(0.01)
      for s in select.select(held, [], [], 0.05)[0]:
        try:
          data = s.recv(1 << 16)
        except OSError:
          data = b""
        counts["refused_503" if data.startswith(b"HTTP/1.1 503") else "closed_other"] += 1
        s.close()
        held.remove(s)
    for s in held:
      s.close()

  thread = threading.Thread(target=attacker, daemon=True)
  thread.start()
  time.sleep(1.0)  # every attacking socket is open
  result = load()
  stop.set()
  thread.join(30)
  result["attacker"] = dict(counts, source=source, sockets=sockets)
  return result
