"""``make test-portable``'s lanes (tests/portable_lanes.py): which CPU code paths a machine gets besides its default."""

from __future__ import annotations

from portable_lanes import lanes


def test_lanes_follow_the_cpu():
    """Every machine gets the generic lane (one thread, no SIMD kernels); x86-64 adds MKL's portable path to it and
    an AVX2 lane only where the CPU has AVX2; other architectures get no MKL settings."""
    avx2 = lanes({"sse4_2", "avx", "avx2"}, "x86_64")
    assert set(avx2) == {"generic", "avx2"}
    assert avx2["generic"]["ATEN_CPU_CAPABILITY"] == "default" and avx2["generic"]["MKL_CBWR"] == "COMPATIBLE"
    assert avx2["generic"]["OMP_NUM_THREADS"] == avx2["generic"]["REA_THREADS"] == "1"
    assert avx2["avx2"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    assert set(lanes({"sse4_2", "avx"}, "x86_64")) == {"generic"}
    arm = lanes(set(), "aarch64")
    assert set(arm) == {"generic"} and "MKL_CBWR" not in arm["generic"]
