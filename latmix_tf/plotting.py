"""The one way latmix writes a matplotlib figure to disk.

Every figure of the project (per-run reports, evaluation plots, generator figures, the
comparison's plots) is drawn on a `matplotlib.figure.Figure` with the Agg canvas - no pyplot
state, no windows, safe in any thread - and written here: the folder is created, the PNG goes
to a temp file first and is renamed into place (a kill or a full disk never leaves a
half-written figure under the final name), and the figure is released.
"""

from __future__ import annotations

import os
import warnings

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str, dpi: int = 120) -> str:
  """Writes `fig` as a PNG at `path` (tight layout, nothing clipped); returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)
  with warnings.catch_warnings():  # a layout that cannot be tightened further is fine
    warnings.simplefilter("ignore")
    fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=dpi, bbox_inches="tight")  # also keeps legends placed outside
  os.replace(tmp, path)
  fig.clear()
  return path
