"""CPU detection and the run-time lever choice (latmix_tf/hardware.py) on canned CPUs.

Why: a lever measured on one kind of CPU must not leak onto another (bf16 is slower where
it is emulated), and numeric levers must stay off unless asked for. The cpuinfo texts are
trimmed copies of real machines' /proc/cpuinfo entries (flags shortened to the relevant
ones plus neighbours, so the parser sees realistic lines).
"""

import pytest

from latmix_tf import hardware

AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr sse sse2 ht syscall nx mmxext pdpe1gb lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm sse4a bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip rdpid

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr sse sse2 fma avx avx2
"""

INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme de pse sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 avx512f avx512dq adx avx512ifma avx512cd sha_ni avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi umip avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg avx512_vpopcntdq amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
"""

INTEL_AVX512 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu sse sse2 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""


def test_parse_amd_avx2_only():
  info = hardware.parse_cpuinfo(AMD_AVX2)
  assert info.model == "AMD EPYC 7B12" and info.vendor == "AuthenticAMD"
  assert info.cores == 2  # two processor entries
  assert "avx2" in info.flags and "fma" in info.flags
  assert not info.avx512 and not info.native_bf16 and not info.amx
  assert info.isa_class == "avx2"


def test_parse_intel_avx512_amx():
  info = hardware.parse_cpuinfo(INTEL_AMX, cores=2)
  assert info.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
  assert info.cores == 2
  assert info.avx512 and info.amx and info.native_bf16
  assert info.isa_class == "amx"


def test_isa_classes_of_avx512_without_bf16_and_of_nothing():
  assert hardware.parse_cpuinfo(INTEL_AVX512).isa_class == "avx512"
  bare = hardware.parse_cpuinfo("processor : 0\nmodel name : Some CPU\n")
  assert bare.flags == frozenset() and bare.isa_class == "other"


TABLE = {"avx2": {"intra_op_threads": 2, "mixed_bfloat16": True, "jit_classifier": True},
         "amx": {"mixed_bfloat16": True, "jit_generator": True, "inter_op_threads": 1}}


def test_numeric_levers_only_when_allowed():
  amx = hardware.parse_cpuinfo(INTEL_AMX)
  safe = hardware.levers(amx, measured=TABLE)
  assert safe == hardware.Levers(inter_op_threads=1)  # bf16 / XLA dropped by default
  bold = hardware.levers(amx, allow_numeric_change=True, measured=TABLE)
  assert bold.mixed_bfloat16 and bold.jit_generator and not bold.jit_classifier


def test_bf16_never_without_native_bf16():
  avx2 = hardware.parse_cpuinfo(AMD_AVX2)
  chosen = hardware.levers(avx2, allow_numeric_change=True, measured=TABLE)
  assert not chosen.mixed_bfloat16  # the table's entry is overridden: emulated bf16 is slow
  assert chosen.jit_classifier and chosen.intra_op_threads == 2


def test_unmeasured_class_gets_every_lever_off_and_bad_table_raises():
  other = hardware.parse_cpuinfo(INTEL_AVX512)
  assert hardware.levers(other, allow_numeric_change=True, measured=TABLE) == hardware.Levers()
  with pytest.raises(ValueError, match="unknown levers"):
    hardware.levers(other, measured={"avx512": {"turbo": True}})


def test_default_table_keeps_the_recipe_numbers():
  for text in (AMD_AVX2, INTEL_AMX, INTEL_AVX512):
    chosen = hardware.levers(hardware.parse_cpuinfo(text))
    assert not any(getattr(chosen, k) for k in hardware.Levers.NUMERIC)


def test_this_machine_is_described():
  d = hardware.describe()
  assert d["cores"] >= 1 and d["isa_class"] in ("amx", "avx512_bf16", "avx512", "avx2",
                                                 "other")
