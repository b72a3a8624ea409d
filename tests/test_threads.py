"""The decode thread policy: every thread on an idle machine, minus the cores other processes keep busy."""

import pytest
import torch

from rea.lm import threads


class FakeShare(threads.CpuShare):
    """CpuShare over a scripted sequence of (wall, system busy, own) samples."""

    def __init__(self, samples):
        self.samples = iter(samples)
        self._last = next(self.samples)
        self._estimate, self._measured = 0.0, True

    def _sample(self):
        return next(self.samples)


def test_other_cores_is_system_busy_minus_own_over_wall_time(monkeypatch):
    share = FakeShare([(0.0, 10.0, 3.0), (2.0, 14.0, 5.0), (3.0, 14.5, 5.5)])
    monkeypatch.setattr(threads.time, "monotonic", lambda: 1e9)
    assert share.other_cores() == pytest.approx((4.0 - 2.0) / 2.0)  # 1 core used by others
    assert share.other_cores() == pytest.approx(0.0)  # only we ran


def test_other_cores_reuses_the_estimate_within_the_window(monkeypatch):
    share = FakeShare([(0.0, 10.0, 3.0), (2.0, 14.0, 5.0)])
    monkeypatch.setattr(threads.time, "monotonic", lambda: 0.01)
    assert share.other_cores(min_window=0.05) == 0.0  # too soon after the last measurement: reused
    monkeypatch.setattr(threads.time, "monotonic", lambda: 2.0)
    assert share.other_cores(min_window=0.05) == pytest.approx(1.0)
    monkeypatch.setattr(threads.time, "monotonic", lambda: 2.01)
    assert share.other_cores(min_window=0.05) == pytest.approx(1.0)  # reused


def test_decode_threads_subtracts_busy_cores(monkeypatch):
    monkeypatch.delenv("REA_THREADS", raising=False)
    monkeypatch.setattr(threads, "max_threads", lambda: 4)
    for other, expected in [(0.0, 4), (0.4, 4), (1.2, 3), (3.6, 1), (7.0, 1)]:
        monkeypatch.setattr(threads, "_SHARE", type("S", (), {"other_cores": lambda self, o=other: o})())
        assert threads.decode_threads("cpu") == expected


def test_pinned_and_single_thread_settings_are_kept(monkeypatch):
    monkeypatch.setenv("REA_THREADS", "3")
    assert threads.max_threads() == 3 and threads.decode_threads("cpu") == 3
    monkeypatch.setenv("REA_THREADS", "zero")
    with pytest.raises(ValueError, match="REA_THREADS must be a positive integer"):
        threads.max_threads()
    monkeypatch.delenv("REA_THREADS")
    monkeypatch.setattr(threads, "max_threads", lambda: 1)
    assert threads.decode_threads("cpu") == 1


def test_torch_threads_restores_the_setting():
    old = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)  # a decode may re-decide inside the block
    assert torch.get_num_threads() == old


def test_max_threads_does_not_ratchet_down_after_a_busy_spell(monkeypatch):
    import torch

    from rea.lm import threads

    monkeypatch.delenv("REA_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CONFIGURED", None)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert threads.max_threads() == 2
        torch.set_num_threads(1)  # a decode loop lowered it while another process was busy
        assert threads.max_threads() == 2
    finally:
        torch.set_num_threads(old)
