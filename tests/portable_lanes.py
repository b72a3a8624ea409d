"""``make test-portable``: the fast tests again under CPU code paths other than this machine's default.

A reader's CPU is not ours: another vendor's AVX-512 kernels, an AVX2-only laptop, MKL on an AMD CPU, one thread.
Two float32 computations of one quantity (batched vs single, cached vs fresh) agree there only to rounding
(``tests/tolerances.py``), and a test that compares them tighter passes on the machine it was written on and fails
on the reader's. Each lane re-runs the tests (the chapter goldens aside: ``make test`` runs those pinned) in an
environment that forces another summation order:

* ``generic``: PyTorch's non-SIMD kernels (``ATEN_CPU_CAPABILITY=default``), MKL's portable code path
  (``MKL_CBWR=COMPATIBLE``), one thread;
* ``avx2`` (x86-64 CPUs with AVX2): PyTorch's and MKL's AVX2 code paths (``ATEN_CPU_CAPABILITY=avx2``,
  ``MKL_CBWR=AVX2``), as on an AVX2-only CPU, with the default thread count.

Measured on a 2-core Xeon with AVX-512: ``tests/test_single_token_forward.py``'s per-target gradients compared at
``atol=1e-6`` (as before the fix) fail in both lanes and pass on the default kernels.

``python tests/portable_lanes.py [--lane NAME ...] [-- PYTEST ARGS]``; exit status 1 if any lane fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def lanes(flags: set[str] | None = None, machine: str | None = None) -> dict[str, dict[str, str]]:
    """Lane name -> environment variables, for the code paths this CPU can run besides its default."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REA_THREADS": "1"}
    out = {"generic": {"ATEN_CPU_CAPABILITY": "default", **one_thread}}
    if machine in ("x86_64", "amd64"):
        out["generic"]["MKL_CBWR"] = "COMPATIBLE"
        if "avx2" in flags:
            out["avx2"] = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    return out


def run_lane(name: str, env: dict[str, str], pytest_args: list[str]) -> tuple[int, float]:
    """Run the fast tests in one lane; ``(exit status, seconds)``."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "--ignore=tests/golden",
           *pytest_args]
    shown = " ".join(f"{k}={v}" for k, v in env.items())
    print(f"== lane {name}: {shown} pytest {' '.join(cmd[3:])}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env={**os.environ, **env})
    return rc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    available = lanes()
    parser = argparse.ArgumentParser(prog="python tests/portable_lanes.py", description=__doc__.splitlines()[0])
    parser.add_argument("--lane", action="append", choices=sorted(available),
                        help="run only this lane (repeatable; default: every lane this CPU has)")
    args = parser.parse_args(argv)
    results = {name: run_lane(name, available[name], extra) for name in (args.lane or available)}
    for name, (rc, seconds) in results.items():
        print(f"test-portable: lane {name}: {'passed' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s")
    return 0 if all(rc == 0 for rc, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
