"""Load benchmark of the TF Serving-compatible server: throughput, latency and errors.

Why: before pointing a demo or another lab's client at `latmix_tf.serving`, we want to know
what it sustains and that it makes no errors under concurrency. The benchmark sends a fixed
number of predict requests (default 1000, row format, `--batch` images each) from
`--concurrency` clients (default 8, one keep-alive connection each) over loopback, verifies
every answer (HTTP 200 and one prediction per instance), and reports throughput, p50/p99
latency and the error count. Results go to `benchmarks/results/serving_load.json`.

By default it exports an untrained classifier of the real Fashion-MNIST architecture
(`ModelConfig()` -> SmallCNN 32-64-128; weights do not change the cost) to a temp directory,
starts the server as a separate process (so clients and server do not share a GIL), and stops
it with SIGTERM at the end, recording its exit code. `--model_base_path name=path` serves a
real export instead; `--url http://127.0.0.1:PORT` measures a server that is already running
(ours or tensorflow_model_server). Only loopback addresses are accepted.

  python benchmarks/serving_load.py                       # ~10-30 s on 2 CPU cores
  python benchmarks/serving_load.py --model_base_path erm_fmnist=saved_models/erm_fmnist
"""

import argparse
import http.client
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
  code = ("from latmix_tf.serving import serve; "
          f"serve({{{name!r}: {os.path.abspath(path)!r}}}, port=0)")
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--url", help="measure an already running server (loopback only)")
  parser.add_argument("--model_base_path", help="name=path of an export to serve")
  parser.add_argument("--model_name", default="bench", help="model name when --url is given")
  parser.add_argument("--requests", type=int, default=1000)
  parser.add_argument("--concurrency", type=int, default=8)
  parser.add_argument("--batch", type=int, default=1, help="instances per request")
  parser.add_argument("--time_limit_s", type=float, default=300.0)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                    "serving_load.json"))
  args = parser.parse_args()
  if not 1 <= args.requests <= 100_000 or not 1 <= args.concurrency <= 64:
    parser.error("--requests must be in [1, 100000] and --concurrency in [1, 64].")

  from latmix_tf.export import versions, write_json_atomic  # pylint: disable=import-outside-toplevel
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
    try:
      result = run_load(url, name, args.requests, args.concurrency, args.batch, args.time_limit_s)
    finally:
      exit_code = None
      if proc is not None:
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=60)
  result.update({"model": source, "server": "latmix_tf.serving (child process)" if proc else url,
                 "server_exit_code_after_sigterm": exit_code, "cpu_count": os.cpu_count(),
                 "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S")})
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json_atomic(args.out, result)
  lat = result["latency_ms"]
  print(f"{result['requests_sent']} requests ({args.batch} image(s) each) from "
        f"{args.concurrency} clients in {result['wall_s']:.2f} s: "
        f"{result['throughput_rps']:.1f} req/s; latency p50 {lat['p50']:.2f} ms, "
        f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; errors {result['errors']}"
        + (f"; server exit code {exit_code}" if proc else ""))
  print(f"wrote {args.out}")
  return 1 if result["errors"] or result["timed_out"] or exit_code not in (None, 0) else 0


if __name__ == "__main__":
  sys.exit(main())
