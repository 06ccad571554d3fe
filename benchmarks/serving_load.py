"""Load benchmark of the TF Serving-compatible server: throughput, latency and errors.

Why: before pointing a demo or another lab's client at `latmix_tf.serving`, we want to know
what it sustains and that it makes no errors under concurrency. The benchmark sends a fixed
number of predict requests (default 1000, row format, `--batch` images each) from
`--concurrency` clients (default 8, one keep-alive connection each) over loopback, verifies
every answer (HTTP 200 and one prediction per instance), and reports throughput, p50/p99
latency and the error count. Results go to `benchmarks/results/serving_load.json` (+ .md).

Two more measurements, on by default (`--scenarios`):
- interleave: while 10,000-image requests (~31 MB of JSON each, under the 32 MiB limit) run
  back to back from one more client, the 1000 one-image requests from 8 clients must keep
  p99 <= 200 ms with 0 errors;
- memory: the server's peak RSS above idle while it answers one such request, sampled from
  /proc every 5 ms; target <= 3x the body size; then `steady`: the idle RSS after five more
  such requests (what the server keeps for good; see docs/serving.md, "Memory").

Three attacks (`serving_attacks.py`), also on by default: the same 8-client load
while 30.9 MB bodies of one huge instance are posted back to back (`hostile_arrays`,
`hostile_numbers`), and while 64 half-sent connections from 127.0.0.2 are held and reopened
(`lockout`). Targets: the clients' p99 <= 200 ms, 0 errors, the server's peak RSS above idle
<= 3x the largest accepted body (the 31.9 MB request above).

By default it exports an untrained classifier of the real Fashion-MNIST architecture
(`ModelConfig()` -> SmallCNN 32-64-128; weights do not change the cost) to a temp directory,
starts the server as a separate process (so clients and server do not share a GIL), and stops
it with SIGTERM at the end, recording its exit code. `--model_base_path name=path` serves a
real export instead; `--url http://127.0.0.1:PORT` measures a server that is already running
(ours or tensorflow_model_server). Only loopback addresses are accepted.

  python benchmarks/serving_load.py                       # ~2-4 min on 2 CPU cores
  python benchmarks/serving_load.py --requests=300        # shorter: ~1-2 min
  python benchmarks/serving_load.py --model_base_path erm_fmnist=saved_models/erm_fmnist
"""

import argparse
import http.client
import platform
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

import serving_attacks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def export_default_model(out_dir):
  """Exports an untrained SmallCNN with the default (paper-scale) config; returns its path."""
  from latmix_tf import export  # pylint: disable=import-outside-toplevel
  from latmix_tf.config import ModelConfig  # pylint: disable=import-outside-toplevel
  from latmix_tf.models.classifiers import build_classifier  # pylint: disable=import-outside-toplevel
  model = build_classifier(ModelConfig(), (28, 28, 1))
  return export.export_classifier(model, os.path.join(out_dir, "1"), (28, 28, 1))


def start_server_process(name, path, deadline_s=180):
  """Runs `serve` in a child process on an ephemeral port; returns (process, url)."""
  code = ("import sys; from latmix_tf.serving import serve; "
          f"sys.exit(serve({{{name!r}: {os.path.abspath(path)!r}}}, port=0))")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-u", "-c", code], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + deadline_s
  for line in proc.stdout:
    if "listening on" in line:
      return proc, f"http://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"
    if time.monotonic() > deadline:
      break
  proc.kill()
  raise RuntimeError("The server did not start; run the same serve(...) call by hand to see why.")


def image_shape(url, name):
  """(H, W, C) of the served model, read from its metadata like any TF Serving client would."""
  conn = http.client.HTTPConnection(*_host_port(url), timeout=30)
  conn.request("GET", f"/v1/models/{name}/metadata")
  meta = json.loads(conn.getresponse().read())
  conn.close()
  dims = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
  dims = next(iter(dims.values()))["tensor_shape"]["dim"]
  return tuple(int(d["size"]) for d in dims[1:])


def _host_port(url):
  parts = urllib.parse.urlsplit(url)
  return parts.hostname, parts.port or 80


def run_load(url, name, requests, concurrency, batch, time_limit_s, seed=0):
  """Sends `requests` predict calls from `concurrency` clients; returns the measurements."""
  shape = image_shape(url, name)
  rng = np.random.default_rng(seed)
  bodies = [json.dumps({"instances": rng.random((batch, *shape)).astype(np.float32).tolist()})
            .encode() for _ in range(16)]
  path = f"/v1/models/{name}:predict"
  lock, counter = threading.Lock(), iter(range(requests))
  latencies, errors, first_errors = [], [0], []
  deadline = time.monotonic() + time_limit_s
  barrier = threading.Barrier(concurrency + 1)

  def client():
    conn = http.client.HTTPConnection(*_host_port(url), timeout=60)
    try:
      for _ in range(2):  # warm-up (connection, first calls), not measured
        conn.request("POST", path, body=bodies[0])
        conn.getresponse().read()
    finally:
      barrier.wait()
    while time.monotonic() < deadline:
      with lock:
        i = next(counter, None)
      if i is None:
        break
      start = time.perf_counter()
      try:
        conn.request("POST", path, body=bodies[i % len(bodies)])
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        ok = resp.status == 200 and len(answer.get("predictions", ())) == batch
        problem = None if ok else f"HTTP {resp.status}: {str(answer)[:200]}"
      except (OSError, http.client.HTTPException, ValueError) as e:
        problem = f"{type(e).__name__}: {e}"
        conn.close()
        conn = http.client.HTTPConnection(*_host_port(url), timeout=60)
      elapsed = time.perf_counter() - start
      with lock:
        latencies.append(elapsed)
        if problem:
          errors[0] += 1
          if len(first_errors) < 5:
            first_errors.append(problem)
    conn.close()

  threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
  for t in threads:
    t.start()
  barrier.wait()
  start = time.perf_counter()
  for t in threads:
    t.join(max(1.0, deadline - time.monotonic() + 60))
  wall = time.perf_counter() - start
  lat_ms = np.array(latencies) * 1e3
  return {"requests_sent": len(latencies), "requests_planned": requests, "errors": errors[0],
          "first_errors": first_errors, "concurrency": concurrency, "instances_per_request": batch,
          "image_shape": list(shape), "wall_s": round(wall, 3),
          "throughput_rps": round(len(latencies) / wall, 1),
          "throughput_images_per_s": round(len(latencies) * batch / wall, 1),
          "latency_ms": {q: round(float(np.percentile(lat_ms, p)), 2) for q, p in
                         (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
                        | {"mean": round(float(lat_ms.mean()), 2)},
          "timed_out": len(latencies) < requests}



def big_body(shape, n=10_000, seed=1):
  """A predict body of `n` binary images (pixels 0 or 1), compact JSON: 31.9 MB for 10,000
  28x28x1 images, just under the 32 MiB body limit."""
  x = np.random.default_rng(seed).integers(0, 2, (n, *shape))
  return json.dumps({"instances": x.tolist()}, separators=(",", ":")).encode()


def _rss_bytes(pid):
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  return 0


def run_memory(url, name, pid, body):
  """Peak RSS of the server above its idle RSS while it answers one big request.

  Idle is measured on a warmed-up server: a request of one model chunk (64 images) first
  traces the signature for that shape and fills TensorFlow's allocator pools.
  """
  shape = image_shape(url, name)
  warm = json.dumps({"instances": np.zeros((64, *shape)).tolist()}).encode()
  for _ in range(2):
    conn = http.client.HTTPConnection(*_host_port(url), timeout=120)
    conn.request("POST", f"/v1/models/{name}:predict", body=warm)
    conn.getresponse().read()
    conn.close()
  time.sleep(0.5)
  idle = _rss_bytes(pid)
  peak, stop = [idle], threading.Event()

  def sample():
    while not stop.is_set():
      peak[0] = max(peak[0], _rss_bytes(pid))
      time.sleep(0.005)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  conn = http.client.HTTPConnection(*_host_port(url), timeout=600)
  start = time.perf_counter()
  conn.request("POST", f"/v1/models/{name}:predict", body=body)
  resp = conn.getresponse()
  answer = resp.read()
  seconds = time.perf_counter() - start
  conn.close()
  stop.set()
  sampler.join()
  above = peak[0] - idle
  return {"body_bytes": len(body), "status": resp.status, "answer_bytes": len(answer),
          "seconds": round(seconds, 2), "idle_rss_mb": round(idle / 2**20, 1),
          "peak_rss_mb": round(peak[0] / 2**20, 1), "peak_above_idle_mb": round(above / 2**20, 1),
          "peak_above_idle_over_body": round(above / len(body), 2), "target": "<= 3.0"}


def run_interleave(url, name, body, requests, concurrency, time_limit_s):
  """The small-request load while big requests run back to back on one more client."""
  stop, big = threading.Event(), {"done": 0, "status": [], "seconds": []}

  def big_client():
    while not stop.is_set():
      conn = http.client.HTTPConnection(*_host_port(url), timeout=600)
      start = time.perf_counter()
      try:
        conn.request("POST", f"/v1/models/{name}:predict", body=body)
        resp = conn.getresponse()
        resp.read()
        big["status"].append(resp.status)
        big["seconds"].append(round(time.perf_counter() - start, 2))
      except (OSError, http.client.HTTPException) as e:
        big["status"].append(f"{type(e).__name__}")
      finally:
        conn.close()

  thread = threading.Thread(target=big_client, daemon=True)
  thread.start()
  time.sleep(1.0)  # the first big request is being received and decoded
  result = run_load(url, name, requests, concurrency, 1, time_limit_s)
  stop.set()
  thread.join(600)
  result["big_requests"] = {"body_bytes": len(body), "statuses": big["status"],
                            "seconds": big["seconds"]}
  result["target"] = "p99 <= 200 ms, 0 errors"
  return result


def write_markdown(path, results):
  """A short table of the figures, beside the JSON."""
  lines = ["# Serving load benchmark", "", f"CPU: {results['cpu']} ({results['cpu_count']} "
           f"cores); load average (1, 5, 15 min) "
           f"{results['load_average_at_start']} at start, {results['load_average_at_end']} at "
           f"end; model: {results['model']}", ""]
  for key, title in (("throughput", "one-image requests, 8 clients"),
                     ("interleave", "one-image requests, 8 clients, while 10,000-image requests run")):
    r = results.get(key)
    if r:
      lat = r["latency_ms"]
      lines.append(f"- {r['requests_sent']} {title}: {r['throughput_rps']} req/s, p50 "
                   f"{lat['p50']} ms, p99 "
                   f"{lat['p99']} ms, max {lat['max']} ms, errors {r['errors']}"
                   + (f"; big requests {r['big_requests']['statuses']} in "
                      f"{r['big_requests']['seconds']} s" if key == "interleave" else ""))
  for key, title in (("hostile_arrays", "while one-instance bodies of 10.3M empty arrays "
                     "(30.9 MB) are posted back to back"),
                     ("hostile_numbers", "while one-instance bodies of 7.8M numbers (30.9 MB) are "
                      "posted back to back"),
                     ("lockout", "while 127.0.0.2 holds 64 half-sent connections, reopened "
                      "when closed")):
    r = results.get(key)
    if r:
      lat = r["latency_ms"]
      lines.append(f"- {r['requests_sent']} one-image requests, 8 clients, {title}: p50 "
                   f"{lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms, errors "
                   f"{r['errors']}; attacker {r['attacker']}; server peak RSS "
                   f"{r.get('server_peak_above_idle_mb')} MB above idle = "
                   f"{r.get('peak_over_largest_accepted_body')}x the largest accepted body "
                   f"(targets: p99 <= 200 ms, 0 errors, <= 3x)")
  m = results.get("memory")
  if m:
    lines.append(f"- memory: {m['body_bytes'] / 2**20:.1f} MiB request answered {m['status']} "
                 f"in {m['seconds']} s; RSS idle {m['idle_rss_mb']} MB, peak "
                 f"{m['peak_rss_mb']} MB: {m['peak_above_idle_over_body']}x the body above "
                 f"idle (target <= 3x)")
  s = results.get("steady")
  if s:
    lines.append(f"- memory kept after {s['requests']} more such requests (idle RSS above the "
                 f"first idle, after each): {s['idle_above_first_idle_mb']} MB, "
                 f"{s['over_body']}x the body")
  lines += [""] + summary_table(results)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def summary_table(results):
  """The figures docs/serving.md quotes: other clients' latency under each condition."""
  rows = ["| 1000 one-image predicts, 8 keep-alive clients | p50 | p99 | errors | server peak "
          "RSS above idle |", "|---|---|---|---|---|"]
  big = results.get("interleave", {}).get("big_requests", {})
  titles = {
      "throughput": "alone",
      "interleave": (f"while 10,000-image requests run (answered "
                     f"{', '.join(map(str, big.get('statuses', [])))} in "
                     f"{', '.join(f'{t:.1f}' for t in big.get('seconds', []))} s)"),
      "hostile_arrays": "while one-instance bodies of 10.3M empty arrays (30.9 MB) are posted",
      "hostile_numbers": "while one-instance bodies of 7.8M numbers (30.9 MB) are posted",
      "lockout": "while 127.0.0.2 holds 64 half-sent connections, reopening each when refused"}
  for key, title in titles.items():
    r = results.get(key)
    if not r:
      continue
    attacker = r.get("attacker", {})
    if "statuses" in attacker:
      answers = ", ".join(f"{n} × {code}" for code, n in attacker["statuses"].items())
      title += f" back to back ({answers}, median answer {attacker['median_answer_s']:.2f} s)"
    elif "refused_503" in attacker:
      title += f" ({attacker['refused_503']:,} × 503)"
    rss = ""
    if r.get("server_peak_above_idle_mb") is not None:
      rss = (f"{r['server_peak_above_idle_mb']:.1f} MB = "
             f"{r['peak_over_largest_accepted_body']:.2f}× the largest accepted body")
    lat = r["latency_ms"]
    rows.append(f"| {title} | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {r['errors']} | "
                f"{rss} |")
  return rows


def cpu_model():
  try:
    with open("/proc/cpuinfo") as f:
      return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or "unknown"


SCENARIOS = ("throughput", "interleave", "memory", "hostile_arrays", "hostile_numbers",
             "lockout")


def run_steady(url, name, pid, body, idle, count=5):
  """Idle RSS above `idle` after each of `count` more big requests (1 s after each answer)."""
  above = []
  for _ in range(count):
    conn = http.client.HTTPConnection(*_host_port(url), timeout=600)
    conn.request("POST", f"/v1/models/{name}:predict", body=body)
    conn.getresponse().read()
    conn.close()
    time.sleep(1.0)
    above.append(round((_rss_bytes(pid) - idle) / 2**20, 1))
  return {"requests": count, "idle_above_first_idle_mb": above,
          "over_body": round(above[-1] * 2**20 / len(body), 2)}


def run_attacks(url, name, pid, scenarios, largest_body, requests, concurrency, time_limit_s):
  """The attack scenarios of serving_attacks.py, each with the server's peak RSS."""
  out = {}
  load = lambda: run_load(url, name, requests, concurrency, 1, time_limit_s)
  bodies = serving_attacks.hostile_bodies()
  for key in [s for s in ("hostile_arrays", "hostile_numbers", "lockout") if s in scenarios]:
    idle = _rss_bytes(pid) if pid else 0
    sampler = serving_attacks.PeakRss(pid, _rss_bytes) if pid else None
    if key == "lockout":
      out[key] = serving_attacks.run_lockout(_host_port(url), load)
    else:
      out[key] = serving_attacks.run_hostile_body(_host_port(url), name, bodies[key], load)
    if sampler:
      above = sampler.stop() - idle
      out[key]["server_peak_above_idle_mb"] = round(above / 2**20, 1)
      out[key]["peak_over_largest_accepted_body"] = round(above / largest_body, 2)
    out[key]["target"] = "p99 <= 200 ms, 0 errors, peak RSS above idle <= 3x the largest body"
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--url", help="measure an already running server (loopback only)")
  parser.add_argument("--model_base_path", help="name=path of an export to serve")
  parser.add_argument("--model_name", default="bench", help="model name when --url is given")
  parser.add_argument("--requests", type=int, default=1000)
  parser.add_argument("--concurrency", type=int, default=8)
  parser.add_argument("--batch", type=int, default=1, help="instances per request")
  parser.add_argument("--time_limit_s", type=float, default=300.0)
  parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                      help=f"comma-separated subset of {','.join(SCENARIOS)}")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                    "serving_load.json"))
  args = parser.parse_args()
  if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 64:
    parser.error("--requests must be in [1, 100000] and --concurrency in [1, 64].")

  from latmix_tf.export import versions, write_json_atomic  # pylint: disable=import-outside-toplevel
  load_at_start = [round(x, 2) for x in os.getloadavg()]
  proc, name = None, args.model_name
  with tempfile.TemporaryDirectory() as tmp:
    if args.url:
      if urllib.parse.urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must point at loopback ({', '.join(LOOPBACK)}), got {args.url}")
      url, source = args.url.rstrip("/"), args.url
    else:
      if args.model_base_path:
        name, _, path = args.model_base_path.partition("=")
        source = path
      else:
        name, path = "bench", export_default_model(os.path.join(tmp, "bench"))
        source = "untrained SmallCNN, default ModelConfig (32-64 conv, 128 dense), 28x28x1"
      proc, url = start_server_process(name, path)
    scenarios = set(args.scenarios.split(","))
    result = {}
    try:
      if "throughput" in scenarios:
        result["throughput"] = run_load(url, name, args.requests, args.concurrency, args.batch,
                                        args.time_limit_s)
      body = big_body(image_shape(url, name)) if scenarios & {"interleave", "memory"} else None
      if "memory" in scenarios and proc is not None:  # before interleave: no big request yet
        result["memory"] = run_memory(url, name, proc.pid, body)
        result["steady"] = run_steady(url, name, proc.pid, body,
                                      result["memory"]["idle_rss_mb"] * 2**20)
      if "interleave" in scenarios:
        result["interleave"] = run_interleave(url, name, body, args.requests, args.concurrency,
                                              args.time_limit_s)
      result.update(run_attacks(url, name, proc.pid if proc else None, scenarios,
                                len(body) if body else len(big_body(image_shape(url, name))),
                                args.requests, args.concurrency, args.time_limit_s))
    finally:
      exit_code = None
      if proc is not None:
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=60)
  result.update({"model": source, "server": "latmix_tf.serving (child process)" if proc else url,
                 "server_exit_code_after_sigterm": exit_code, "cpu_count": os.cpu_count(),
                 "cpu": cpu_model(), "load_average_at_start": load_at_start,
                 "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                 "versions": versions()})
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json_atomic(args.out, result)
  write_markdown(os.path.splitext(args.out)[0] + ".md", result)
  with open(os.path.splitext(args.out)[0] + ".md") as f:
    print(f.read(), end="")
  print(f"wrote {args.out}")
  runs = [result[k] for k in ("throughput", "interleave", "hostile_arrays", "hostile_numbers",
                               "lockout") if k in result]
  failed = any(r["errors"] or r["timed_out"] for r in runs)
  return 1 if failed or exit_code not in (None, 0) else 0

if __name__ == "__main__":
  sys.exit(main())
