"""Defining properties of every MNIST-C / CIFAR-10-C corruption, and the cached corrupted set.

Each corruption is checked against what makes it that corruption: shot noise has the
Poisson mean and variance, rotate / shear / scale equal scipy.ndimage's warps about the
centre, brightness only brightens, more severe levels move images further from the clean
ones, and so on. Images are synthetic (strokes for 28x28, smooth colour fields for 32x32).
"""

import numpy as np
import pytest
import scipy.ndimage as ndi

from latmix_tf.evaluation import corruptions as C
from latmix_tf.evaluation.corruptions import cifar10_c, mnist_c, ops


def _strokes(n, seed=0):
  rng = np.random.default_rng(seed)
  x = np.zeros((n, 28, 28, 1))
  for i in range(n):
    r0, c0 = rng.integers(5, 10, 2)
    w = rng.integers(2, 4)
    x[i, r0:r0 + 14, c0:c0 + w] = 1
    x[i, r0:r0 + w, c0:c0 + 10] = 1
    x[i, r0 + 12:r0 + 12 + w, c0:c0 + 10] = 0.8
  return (x * 255).astype(np.uint8)


def _colour_fields(n, seed=0):
  x = ndi.gaussian_filter(np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)), (0, 3, 3, 0))
  x -= x.min(axis=(1, 2, 3), keepdims=True)
  return (255 * x / x.max(axis=(1, 2, 3), keepdims=True)).astype(np.uint8)


IMAGES = {"mnist_c": _strokes(48), "cifar10_c": _colour_fields(32)}
ALL = [(s, n) for s in C.SUITES for n in C.names(s)]
# Mean |corrupted - clean| rises at every level ...
STRICT = {"mnist_c": ("shot_noise", "impulse_noise", "shear", "rotate", "brightness"),
          "cifar10_c": ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
                        "zoom_blur", "snow", "fog", "brightness", "contrast", "pixelate",
                        "jpeg_compression")}
# ... or from level 1 to 5 (saturating: images smeared / moved off the canvas; or the
# reference tables themselves are not monotone in between).
ENDS = {"mnist_c": ("glass_blur", "motion_blur", "scale", "translate", "fog", "spatter"),
        "cifar10_c": ("glass_blur", "motion_blur", "frost")}
# No severity: every level is the same transform.
FIXED = {"mnist_c": ("stripe", "dotted_line", "zigzag", "canny_edges"), "cifar10_c": ()}


def _distance(suite, name, severity, seed=1):
  x = IMAGES[suite]
  y = C.corrupt(x, suite, name, severity, np.random.default_rng(seed))
  return float(np.abs(y.astype(np.float64) - x).mean())


def test_registry_has_the_fifteen_of_each_benchmark():
  assert len(C.names("mnist_c")) == 15 and len(C.names("cifar10_c")) == 15
  assert C.suite_for((28, 28, 1)) == "mnist_c" and C.suite_for((32, 32, 3)) == "cifar10_c"
  assert C.protocol_severities("mnist_c", "shot_noise") == (5,)
  assert C.protocol_severities("cifar10_c", "fog") == (1, 2, 3, 4, 5)
  with pytest.raises(ValueError, match="valid: shot_noise"):
    C.get("mnist_c", "snow")
  with pytest.raises(ValueError, match="channels"):
    C.suite_for((28, 28, 2))
  # Every corruption has a test below: severity ordering or fixed.
  for suite in C.SUITES:
    covered = set(STRICT[suite]) | set(ENDS[suite]) | set(FIXED[suite]) | {"elastic_transform"}
    assert set(C.names(suite)) <= covered


@pytest.mark.parametrize("suite,name", ALL)
def test_corruption_is_deterministic_uint8_and_changes_images(suite, name):
  x = IMAGES[suite][:8]
  a = C.corrupt(x, suite, name, 3, np.random.default_rng(5))
  b = C.corrupt(x, suite, name, 3, np.random.default_rng(5))
  assert a.dtype == np.uint8 and a.shape == x.shape
  np.testing.assert_array_equal(a, b)
  assert np.abs(a.astype(int) - x).mean() > 0.5


@pytest.mark.parametrize("suite,name", [(s, n) for s in STRICT for n in STRICT[s]])
def test_more_severe_is_further_from_clean(suite, name):
  d = [_distance(suite, name, s) for s in C.SEVERITIES]
  assert all(np.diff(d) > 0), d


@pytest.mark.parametrize("suite,name", [(s, n) for s in ENDS for n in ENDS[s]] +
                         [(s, n) for s in FIXED for n in FIXED[s]])
def test_severity_five_vs_one(suite, name):
  d1, d5 = _distance(suite, name, 1), _distance(suite, name, 5)
  if name in FIXED[suite]:
    assert d1 == d5
  else:
    assert d1 < d5


@pytest.mark.parametrize("fn,severity,rate,level", [(cifar10_c.shot_noise, 5, 50, 0.5),
                                                    (mnist_c.shot_noise, 1, 60, 0.3)])
def test_shot_noise_has_poisson_mean_and_variance(fn, severity, rate, level):
  x = np.full((400, 28, 28, 1), level)
  y = fn(x, severity, np.random.default_rng(0))
  lam = level * rate  # y = Poisson(lam) / rate: mean = level, variance = level / rate
  assert y.mean() == pytest.approx(level, rel=2e-3)
  assert y.var() == pytest.approx(lam / rate ** 2, rel=0.02)
  assert np.allclose(y * rate, np.round(y * rate))  # integer photon counts


def test_impulse_noise_flips_the_stated_fraction_half_salt_half_pepper():
  x = np.full((200, 28, 28, 1), 0.5)
  y = mnist_c.impulse_noise(x, 4, np.random.default_rng(0))   # c = 0.17
  assert np.mean(y != 0.5) == pytest.approx(0.17, abs=0.005)
  assert np.mean(y == 1.0) == pytest.approx(np.mean(y == 0.0), abs=0.005)


@pytest.mark.parametrize("severity", [2, 5])
def test_rotate_equals_scipy_rotate_about_the_centre(severity):
  x = IMAGES["mnist_c"][:16].astype(np.float64) / 255
  out = mnist_c.rotate(x, severity, np.random.default_rng(0))
  deg = np.degrees([0.2, 0.4, 0.6, 0.8, 1.0][severity - 1])
  signs = []
  for o, img in zip(out, x):
    errs = [np.abs(o - ndi.rotate(img, s * deg, axes=(1, 0), reshape=False, order=1,
                                  mode="constant")).max() for s in (-1, 1)]
    assert min(errs) < 1e-9
    signs.append(int(np.argmin(errs)))
  assert 0 < sum(signs) < len(signs)  # both directions occur


def _about_centre(img, matrix):
  centre = (np.array(img.shape[:2]) - 1) / 2.0
  m3 = np.eye(3)
  m3[:2, :2] = matrix
  return ndi.affine_transform(img, m3, offset=list(centre - matrix @ centre) + [0], order=1)


def test_shear_and_scale_equal_scipy_affine_about_the_centre():
  x = IMAGES["mnist_c"][:16].astype(np.float64) / 255
  c = 0.4  # shear, severity 2: row_in = cos(c) row; col_in = col - sin(c) row (+ centring)
  out = mnist_c.shear(x, 2, np.random.default_rng(0))
  for o, img in zip(out, x):
    refs = [_about_centre(img, np.array([[np.cos(s * c), 0], [-np.sin(s * c), 1]]))
            for s in (-1, 1)]
    assert min(np.abs(o - r).max() for r in refs) < 1e-9
  out = mnist_c.scale(x, 3, None)  # shrink by 0.7: input coordinates = output / 0.7
  for o, img in zip(out, x):
    np.testing.assert_allclose(o, _about_centre(img, np.eye(2) / 0.7), atol=1e-9)
  assert out.sum() < 0.6 * x.sum()  # area shrinks by ~0.49


def test_translate_shifts_by_c_pixels_on_both_axes():
  x = IMAGES["mnist_c"][:8].astype(np.float64) / 255
  out = mnist_c.translate(x, 3, np.random.default_rng(0))
  for o, img in zip(out, x):
    shifted = [ndi.shift(img, (dy, dx, 0), order=0, mode="constant")
               for dy in (-3, 3) for dx in (-3, 3)]
    assert min(np.abs(o - s).max() for s in shifted) == 0


@pytest.mark.parametrize("suite", ["mnist_c", "cifar10_c"])
def test_brightness_only_brightens_and_more_with_severity(suite):
  x = IMAGES[suite].astype(np.float64) / 255
  fn = C.get(suite, "brightness")
  outs = [fn(x, s, None) for s in C.SEVERITIES]
  assert (outs[0] >= x - 1e-12).all()
  for a, b in zip(outs, outs[1:]):
    assert (b >= a - 1e-12).all() and b.mean() > a.mean()
  if suite == "cifar10_c":  # HSV value shift: hue and saturation kept, channel ratios equal
    v, v_new = x.max(-1), outs[0].max(-1)
    keep = (v > 0.05) & (v_new < 1)
    np.testing.assert_allclose((outs[0] / v_new[..., None])[keep], (x / v[..., None])[keep],
                               atol=1e-9)


def test_stripe_inverts_the_outer_quarters_and_is_an_involution():
  x = IMAGES["mnist_c"][:4].astype(np.float64) / 255
  y = mnist_c.stripe(x, 1, None)
  np.testing.assert_array_equal(y[:, :, 7:21], x[:, :, 7:21])
  np.testing.assert_allclose(y[:, :, :7], 1 - x[:, :, :7])
  np.testing.assert_allclose(mnist_c.stripe(y, 1, None), x)


@pytest.mark.parametrize("name", ["dotted_line", "zigzag"])
def test_lines_only_add_ink(name):
  x = IMAGES["mnist_c"][:8].astype(np.float64) / 255
  y = mnist_c.CORRUPTIONS[name](x, 1, np.random.default_rng(0))
  assert (y >= x).all() and (y > x).any(axis=(1, 2, 3)).all()


def test_canny_finds_the_outline_of_a_square_and_nothing_in_flat_regions():
  img = np.zeros((1, 28, 28))
  img[0, 8:20, 8:20] = 1.0
  edges = ops.canny(img)[0]
  assert edges.dtype == bool and edges.any()
  rows, cols = np.nonzero(edges)
  assert rows.min() >= 6 and rows.max() <= 21 and cols.min() >= 6 and cols.max() <= 21
  assert not edges[11:17, 11:17].any()          # the flat inside
  assert not ops.canny(np.full((1, 28, 28), 0.7)).any()


def test_motion_blur_is_imagemagicks_one_sided_gaussian_streak():
  img = np.zeros((1, 9, 15, 1))
  img[0, 4, 12] = 1.0
  out = ops.motion_blur(img, radius=3, sigma=1.5, angles=np.array([0.0]))
  w = np.exp(-np.arange(7) ** 2 / (2 * 1.5 ** 2))
  expected = np.zeros(15)
  expected[12 - np.arange(7)] = w / w.sum()  # pixel x reads x + i: the streak runs left
  np.testing.assert_allclose(out[0, 4, :, 0], expected)
  assert out[0, [0, 1, 2, 3, 5, 6, 7, 8]].max() == 0
  const = np.full((1, 9, 15, 1), 0.4)
  np.testing.assert_allclose(ops.motion_blur(const, 10, 3, np.array([30.0])), const)


def test_corrupted_set_is_cached_by_key_and_reused(tmp_path):
  x = IMAGES["mnist_c"][:20]
  spec = C.CorruptionSpec("mnist_c", ("shot_noise", "stripe"), (1, 5), samples=12, seed=3)
  logs = []
  first = C.corrupted_test_set(x, spec, str(tmp_path), logs.append)
  assert sorted(first) == [("shot_noise", 1), ("shot_noise", 5), ("stripe", 1), ("stripe", 5)]
  folders = [f for f in tmp_path.iterdir()]
  assert len(folders) == 1 and (folders[0] / "manifest.json").exists()
  logs.clear()
  again = C.corrupted_test_set(x, spec, str(tmp_path), logs.append)
  assert any("cached set" in line for line in logs)
  for key in first:
    np.testing.assert_array_equal(again[key], first[key])
    assert first[key].shape == (12, 28, 28, 1)
  np.testing.assert_array_equal(first[("shot_noise", 1)], C.corrupted_test_set(x, spec)[
      ("shot_noise", 1)])                      # the cache changes nothing
  other = C.corrupted_test_set(x, spec.__class__(**{**spec.__dict__, "seed": 4}), str(tmp_path))
  assert len(list(tmp_path.iterdir())) == 2
  assert (other[("shot_noise", 5)] != first[("shot_noise", 5)]).any()
  assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp left


def test_corruption_metrics_mca_is_the_mean_over_corruptions():
  x = IMAGES["mnist_c"][:10]
  sets = {("a", 1): x, ("a", 2): x, ("b", 1): 255 - x}
  y = np.zeros(10, int)
  y[:4] = 1
  # A "model" predicting class 1 for bright images.
  bright = lambda im: np.stack([np.zeros(len(im)), (im.mean(axis=(1, 2, 3)) > 127) * 1.0], 1)
  y_pred_clean = bright(x).argmax(1)
  acc_a = np.mean(y_pred_clean == y)
  metrics, table, logits, labels = C.corruption_metrics(bright, sets, y)
  assert table["a"] == {1: acc_a, 2: acc_a}
  assert metrics["corruption/mca"] == pytest.approx(
      np.mean([acc_a, np.mean(bright(255 - x).argmax(1) == y)]))
  assert logits.shape == (30, 2) and labels.shape == (30,)


def test_damaged_cached_set_is_detected_and_regenerated(tmp_path):
  """A cached `.npy` zeroed in place (same size, still parses) is never used: its SHA-256 no
  longer matches the manifest's, the set is generated again and equals the original."""
  x = IMAGES["mnist_c"][:20]
  spec = C.CorruptionSpec("mnist_c", ("fog", "stripe"), (5,), samples=12, seed=3)
  first = {k: np.array(v) for k, v in C.corrupted_test_set(x, spec, str(tmp_path), print).items()}
  folder, = tmp_path.iterdir()
  victim = folder / "fog_s5.npy"
  header = len(victim.read_bytes()) - first[("fog", 5)].nbytes
  with open(victim, "r+b") as f:  # the pixels zeroed, the .npy header kept
    f.seek(header)
    f.write(bytes(first[("fog", 5)].nbytes))
  assert not np.load(victim).any()
  logs = []
  again = C.corrupted_test_set(x, spec, str(tmp_path), logs.append)
  assert any("fog_s5.npy" in line and "regenerating" in line for line in logs), logs
  for key in first:
    np.testing.assert_array_equal(np.asarray(again[key]), first[key])
  np.testing.assert_array_equal(np.load(victim), first[("fog", 5)])  # the cache is repaired
  logs.clear()
  C.corrupted_test_set(x, spec, str(tmp_path), logs.append)
  assert any("cached set" in line for line in logs)
