"""Which CPU this is, and which speed levers were measured to pay off on its kind.

Our machines differ: an Intel 2-core with AVX-512, an AMD EPYC 2-core with AVX2
only, an AMD EPYC (Zen 5) 2-core with AVX-512 and native bf16. A lever that helps one kind
can hurt another (bf16 is emulated, and slower, without AVX512_BF16 / AMX; XLA was slower
than TF's graph executor on the Intel machine), so a lever is never hard-coded for a CPU
*model*: `cpu_info` reads the instruction-set flags (`/proc/cpuinfo`, else `lscpu`) and
`levers` looks the CPU's *ISA class* up in `MEASURED`, the table of what was measured to win
on that class (`benchmarks/levers.py`, results in `benchmarks/results/levers.md`).

Levers that change the computed numbers (XLA's fusions reorder float sums, bf16 rounds
activations) are a method change: `levers` returns them only with
`allow_numeric_change=True`, so the default recipe computes the same numbers everywhere.
An ISA class with no measurement gets every lever off.

What reads `levers` today: the benchmarks, which record the choice beside every figure. No
lever has won on a measured class (`MEASURED`), so no run applies one; a class that gains one
needs it applied where it acts (thread pools before TensorFlow starts, `jit_compile` on the
compiled steps of `latmix_tf.steps`), which is not wired yet.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Dict, FrozenSet, Mapping, Optional

CPUINFO = "/proc/cpuinfo"


@dataclasses.dataclass(frozen=True)
class CpuInfo:
  """What `levers` needs to know about a CPU.

  Attributes:
    model: the model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz").
    vendor: "AuthenticAMD", "GenuineIntel", ... ("" if unknown).
    flags: the kernel's instruction-set flags (lower case, e.g. "avx512f", "avx512_bf16").
    cores: logical CPUs this process may use.
  """
  model: str
  vendor: str
  flags: FrozenSet[str]
  cores: int

  @property
  def avx512(self) -> bool:
    return "avx512f" in self.flags

  @property
  def amx(self) -> bool:
    """Intel AMX tiles with bf16 (Sapphire Rapids and later)."""
    return {"amx_tile", "amx_bf16"} <= self.flags

  @property
  def native_bf16(self) -> bool:
    """bf16 dot products in hardware (AVX512_BF16 or AMX-BF16); else oneDNN emulates them."""
    return "avx512_bf16" in self.flags or self.amx

  @property
  def isa_class(self) -> str:
    """The key of `MEASURED`: the widest matmul path oneDNN can use on this CPU."""
    if self.amx:
      return "amx"
    if self.avx512 and self.native_bf16:
      return "avx512_bf16"
    if self.avx512:
      return "avx512"
    if "avx2" in self.flags and "fma" in self.flags:
      return "avx2"
    return "other"


def parse_cpuinfo(text: str, cores: Optional[int] = None) -> CpuInfo:
  """`CpuInfo` from the text of /proc/cpuinfo (the first processor's entry; they agree).

  Args:
    text: the file's contents.
    cores: logical CPUs available; None counts the "processor" entries.
  Returns:
    The parsed `CpuInfo` (empty fields where the text lacks them).
  """
  fields: Dict[str, str] = {}
  processors = 0
  for line in text.splitlines():
    key, sep, value = line.partition(":")
    if not sep:
      continue
    key = key.strip().lower()
    if key == "processor":
      processors += 1
    fields.setdefault(key, value.strip())
  # x86 says "flags"; the lscpu fallback says "Flags"; arm64 says "Features".
  flags = fields.get("flags") or fields.get("features") or ""
  return CpuInfo(model=fields.get("model name", ""), vendor=fields.get("vendor_id", ""),
                 flags=frozenset(flags.lower().split()),
                 cores=cores if cores is not None else max(processors, 1))


def _available_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def cpu_info(path: str = CPUINFO) -> CpuInfo:
  """This machine's CPU: /proc/cpuinfo, else `lscpu`, else the model name alone."""
  cores = _available_cores()
  if os.path.exists(path):
    with open(path, encoding="utf-8", errors="replace") as f:
      return parse_cpuinfo(f.read(), cores)
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
  except (OSError, subprocess.SubprocessError):
    import platform  # pylint: disable=import-outside-toplevel
    return CpuInfo(platform.processor() or platform.machine(), "", frozenset(), cores)
  lscpu = {k.strip().lower(): v.strip() for k, _, v in
           (line.partition(":") for line in out.splitlines())}
  return CpuInfo(lscpu.get("model name", ""), lscpu.get("vendor id", ""),
                 frozenset(lscpu.get("flags", "").lower().split()), cores)


@dataclasses.dataclass(frozen=True)
class Levers:
  """Speed settings applied at run time (none of them part of any config hash).

  Attributes:
    jit_classifier / jit_generator / jit_inversion: XLA `jit_compile` on the classifier's
      train step, the GAN's step loop, the inversion's batch optimisation (numeric change).
    mixed_bfloat16: Keras `mixed_bfloat16` policy (numeric change; native bf16 CPUs only).
    intra_op_threads / inter_op_threads: TF thread pools; 0 = TF's default.
  """
  jit_classifier: bool = False
  jit_generator: bool = False
  jit_inversion: bool = False
  mixed_bfloat16: bool = False
  intra_op_threads: int = 0
  inter_op_threads: int = 0

  NUMERIC = ("jit_classifier", "jit_generator", "jit_inversion", "mixed_bfloat16")


# What won on each ISA class (benchmarks/levers.py; the figures, loads and commands are in
# benchmarks/results/levers.md). Only levers measured faster appear; a class not listed
# gets none. Numeric levers here are still off unless the caller allows numeric change.
MEASURED: Mapping[str, Mapping[str, object]] = {
    # AMD EPYC 2-core (family 26), AVX-512 + AVX512_BF16, measured under load 9-12: nothing
    # beat TF's defaults. XLA: classifier step 5.4x and inversion 2.2x *more* CPU, GAN step
    # even; mixed_bfloat16: classifier -4%, G+dL/dz -11% CPU (within the +-10-15% noise of
    # a loaded machine; not worth a method change); oneDNN off: 1.4-1.6x slower; one
    # intra-op thread costs less CPU per step but gives up the second core on a quiet
    # machine (a load-dependent choice, not a CPU-kind one). See levers.md.
    "avx512_bf16": {},
}


def levers(info: Optional[CpuInfo] = None, allow_numeric_change: bool = False,
           measured: Mapping[str, Mapping[str, object]] = MEASURED) -> Levers:
  """The levers measured to win on this CPU's ISA class.

  Args:
    info: the CPU (default: this machine's, `cpu_info()`).
    allow_numeric_change: also return levers that change the computed numbers (XLA, bf16);
      off by default so the recipe's figures stay comparable across machines.
    measured: ISA class -> {lever field: value}, default `MEASURED`.
  Returns:
    A `Levers`; bf16 is never on without native bf16, whatever the table says.
  """
  info = info or cpu_info()
  chosen = dict(measured.get(info.isa_class, {}))
  unknown = set(chosen) - {f.name for f in dataclasses.fields(Levers)}
  if unknown:
    raise ValueError(f"unknown levers {sorted(unknown)} in the table for {info.isa_class!r}; "
                     f"valid: {[f.name for f in dataclasses.fields(Levers)]}.")
  if not allow_numeric_change:
    chosen = {k: v for k, v in chosen.items() if k not in Levers.NUMERIC}
  if not info.native_bf16:
    chosen["mixed_bfloat16"] = False
  return Levers(**chosen)


def describe(info: Optional[CpuInfo] = None) -> Dict[str, object]:
  """A JSON-friendly summary for result files: model, vendor, cores, ISA class, key flags."""
  info = info or cpu_info()
  keys = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
  return {"model": info.model, "vendor": info.vendor, "cores": info.cores,
          "isa_class": info.isa_class, "flags": [k for k in keys if k in info.flags]}
