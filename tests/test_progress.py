"""The log sink and progress bars: lines leave a piped process at once, and a bar writes
plain periodic lines (no carriage returns) when its stream is not a terminal."""

import io
import os
import select
import subprocess
import sys
import time

from latmix_tf import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_line_within(pipe, seconds):
  ready, _, _ = select.select([pipe], [], [], seconds)
  return pipe.readline() if ready else None


def test_piped_output_appears_line_by_line():
  # The child logs, then blocks until told to go on: the first line can only reach us
  # while it waits if the sink flushed it (print into a pipe would still hold it).
  code = ("import sys; from latmix_tf import progress; log = progress.log_sink(); "
          "log('first line'); sys.stdin.readline(); "
          "with_bar = progress.bar(3, 'loop', log, interval_s=0.0)\n"
          "with with_bar as b:\n  b.update(1, loss=0.5); sys.stdin.readline(); b.update(2)\n")
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert _read_line_within(proc.stdout, 30) == "first line\n"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = _read_line_within(proc.stdout, 30)
    assert line.startswith("loop: 1/3 (33%)") and "loss=0.5" in line and "\r" not in line
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert _read_line_within(proc.stdout, 30).startswith("loop: 3/3 (100%)")
    assert proc.wait(30) == 0
  finally:
    if proc.poll() is None:
      proc.kill()


def test_non_tty_bar_logs_plain_lines_at_most_every_interval():
  lines = []
  with progress.bar(1000, "bank chunks", lines.append, stream=io.StringIO(),
                    interval_s=3600) as b:
    for i in range(1000):
      b.update(1, psnr=20.0 + i / 1000)
  assert len(lines) == 1  # the interval never passed: only the final line
  assert lines[0].startswith("bank chunks: 1000/1000 (100%)") and "psnr=21" in lines[0]
  lines.clear()
  with progress.bar(None, "attack", lines.append, stream=io.StringIO(), interval_s=0.0) as b:
    b.update(5)
    time.sleep(0.01)
    b.update(5)
  assert [l.split(" ")[:2] for l in lines] == [["attack:", "5"], ["attack:", "10"]]


def test_tty_bar_redraws_one_line_in_place():
  stream, lines = io.StringIO(), []
  with progress.bar(4, "epoch 1/2", lines.append, stream=stream, tty=True) as b:
    for _ in range(4):
      b.update(1, loss=1.25)
  text = stream.getvalue()
  assert not lines and text.count("\n") == 1 and text.startswith("\r")
  assert "[" + "=" * 30 + "]" in text and "4/4 (100%)" in text and "loss=1.25" in text
