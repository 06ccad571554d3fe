"""The one way latmix writes a figure to disk, and how it draws an image on one.

Every figure of the project (per-run reports, evaluation plots, generator figures, the
comparison's plots) is drawn on a `matplotlib.figure.Figure` with the Agg canvas - no pyplot
state, no windows, safe in any thread - and written here: the folder is created, the PNG goes
to a temp file first and is renamed into place (a kill or a full disk never leaves a
half-written figure under the final name), and the figure is released. Grids of generated
images are written here too, as their pixels: a matplotlib canvas is always RGBA and
resamples, while a grid of samples should show exactly what the generator produced.
"""

from __future__ import annotations

import os
import warnings
from typing import Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def save_figure(fig: Union[Figure, np.ndarray], path: str, dpi: int = 120) -> str:
  """Writes `fig` as a PNG at `path`; returns `path`.

  Args:
    fig: a Figure (laid out tight at `dpi`, nothing clipped), or the uint8 pixels
      [H, W, C] of an image, C = 1 (grey) or 3, written pixel for pixel with C channels.
    path: the PNG to write (its folder is created).
    dpi: resolution of a Figure.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  if isinstance(fig, np.ndarray):
    pixels = fig[..., 0] if fig.shape[-1] == 1 else fig
    Image.fromarray(np.ascontiguousarray(pixels, np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)
  with warnings.catch_warnings():  # a layout that cannot be tightened further is fine
    warnings.simplefilter("ignore")
    fig.tight_layout()
  fig.savefig(tmp, dpi=dpi, bbox_inches="tight")  # also keeps legends placed outside
  os.replace(tmp, path)
  fig.clear()
  return path


def show_image(ax, image: np.ndarray) -> None:
  """Draws one image in [0, 1] ([H, W, 1] grey or [H, W, 3]) on `ax`, without ticks."""
  image = np.clip(image, 0.0, 1.0)
  if image.shape[-1] == 1:
    ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    ax.imshow(image)
  ax.set_xticks([])
  ax.set_yticks([])
