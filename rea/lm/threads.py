"""How many threads a CPU decode uses: all it may, minus the cores other processes keep busy.

A decode step is a chain of small matrix products, each split across the OpenMP/MKL threads and ended by a
barrier. When another process holds a core, one of our threads is descheduled and every barrier waits for it.
Measured on a 2-core machine with one competing CPU-bound process (SmolLM2, ``bench/bench_sampler.py`` and
one decode step per batch size):

===========  ===============  ===============  ===============
rows         idle, 2 threads  busy, 2 threads  busy, 1 thread
===========  ===============  ===============  ===============
8            68 ms            140 ms           92 ms
64           159 ms           503 ms           190 ms
===========  ===============  ===============  ===============

So the decode loop runs with ``n = max(1, n_max − round(c_other))`` threads, where ``n_max`` is the process's
thread setting (``torch.get_num_threads()``, i.e. ``OMP_NUM_THREADS`` or the number of cores; pin it with
``REA_THREADS``) and ``c_other`` is the number of cores the *other* processes used since the previous decision,
measured from ``/proc/stat``-style system CPU times minus this process's own (``psutil``). An idle machine keeps
every thread; a busy one loses throughput in proportion to the CPU share lost instead of stalling at barriers.

A decision is re-measured at most every 50 ms (``CpuShare.other_cores``). The thread count changes float rounding,
not the sampled distribution; results are bit-reproducible only with a fixed count (``REA_THREADS=n`` or
``OMP_NUM_THREADS=1``, as the golden checks run).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch


class CpuShare:
    """Cores used by other processes between consecutive calls of :meth:`other_cores` (system busy time minus this
    process's CPU time, over wall time)."""

    def __init__(self):
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._last = self._sample()
        self._estimate, self._measured = 0.0, False

    def _sample(self) -> tuple[float, float, float]:
        """(wall time, system busy CPU seconds, this process's CPU seconds)."""
        cpu = self._psutil.cpu_times()
        busy = sum(cpu) - cpu.idle - getattr(cpu, "iowait", 0.0)
        own = sum(self._process.cpu_times()[:2])
        return time.monotonic(), busy, own

    def other_cores(self, min_window: float = 0.05) -> float:
        """Average number of cores other processes kept busy since the last measurement.

        Within ``min_window`` seconds of the last measurement (a window too short to measure) the last estimate is
        returned again, so calling this in a tight loop costs nothing; only the first call waits ``min_window`` for
        a first measurement."""
        t0, busy0, own0 = self._last
        elapsed = time.monotonic() - t0
        if elapsed < min_window and self._measured:
            return self._estimate
        if elapsed < min_window:
            time.sleep(min_window - elapsed)
        self._measured = True
        now = self._sample()
        self._last = now
        self._estimate = max(0.0, ((now[1] - busy0) - (now[2] - own0)) / (now[0] - t0))
        return self._estimate


_SHARE: CpuShare | None = None


_CONFIGURED: int | None = None


def max_threads() -> int:
    """The most threads a decode may use: ``REA_THREADS`` if set, else the process's thread setting when this was
    first asked (``torch.get_num_threads()``: ``OMP_NUM_THREADS`` or the number of cores).

    Not the *current* setting: a long decode loop lowers it while another process is busy, and reading that back
    would ratchet the count down for good (a TPS run would stay on one thread after the other process ended).
    """
    global _CONFIGURED
    pinned = os.environ.get("REA_THREADS", "").strip()
    if pinned:
        if not pinned.isdigit() or int(pinned) < 1:
            raise ValueError(f"REA_THREADS must be a positive integer, got {pinned!r}")
        return int(pinned)
    if _CONFIGURED is None:
        _CONFIGURED = torch.get_num_threads()
    return _CONFIGURED


def decode_threads(device: torch.device | str = "cpu") -> int:
    """Threads for the next decode on ``device``: ``max_threads() − round(cores used by others)``, at least 1.

    A pinned count (``REA_THREADS``) and a single-thread setting are returned as they are; non-CPU devices keep the
    current setting.
    """
    global _SHARE
    n_max = max_threads()
    if torch.device(device).type != "cpu" or n_max == 1 or os.environ.get("REA_THREADS", "").strip():
        return n_max
    if _SHARE is None:
        _SHARE = CpuShare()
    return max(1, n_max - int(round(_SHARE.other_cores())))


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous setting after."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:  # the block may have changed it again
            torch.set_num_threads(old)


def adaptive_threads(method):
    """Decorate a model-calling method of an object with a ``device`` attribute so it runs with
    :func:`decode_threads` threads."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch_threads(decode_threads(self.device)):
            return method(self, *args, **kwargs)

    return wrapper
