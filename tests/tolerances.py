"""How closely two float32 computations of one quantity agree on any reader's CPU: the tests' one tolerance for them.

Two float32 computations of the same quantity (batched vs per row, cached vs fresh, lockstep vs single) sum their
products in another order, and how depends on the CPU's kernels (AVX-512, AVX2 or generic; MKL's code path; the
thread count). Measured differences, relative to the largest magnitude of the compared tensor
(``Scorer.target_grad``, batched vs one call per target, ``tests/test_single_token_forward.py``): ≤ 6e-7 on the
default kernels of a Xeon with AVX-512, 1.6e-6 with ``MKL_CBWR=COMPATIBLE``, 2.3e-6 with that and
``ATEN_CPU_CAPABILITY=default``; an AMD EPYC's AVX-512 kernels gave 3e-5 relative to one gradient element of 0.34
(issue "Tests that pass on every reader's CPU"). Lockstep vs single estimates of Wu & Hilton's methods: 0 on the
default kernels, 2.5e-7 relative under the other code paths. So such results are compared to 1e-5 of their scale,
never elementwise to 1e-6; ``make test-portable`` runs the fast tests under those other code paths.
"""

from __future__ import annotations

import torch

FLOAT32_CROSS_KERNEL_RTOL = 1e-5


def assert_close_across_kernels(actual, expected, rtol: float = FLOAT32_CROSS_KERNEL_RTOL, what: str = ""):
    """Assert ``|actual − expected| ≤ rtol · max|expected|`` elementwise: two float32 computations of one quantity.

    The bound scales with the tensor's largest magnitude, not each element's: an element near zero (a gradient
    component, a logit) carries the rounding of the large terms it was summed from. Tensors or arrays of one shape.
    """
    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    assert a.shape == e.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(e.shape)}"
    scale = float(e.abs().max()) if e.numel() else 0.0
    diff = float((a - e).abs().max()) if e.numel() else 0.0
    assert diff <= rtol * scale, f"{what}: max |difference| {diff:.3g} > {rtol:g} × max |expected| {scale:.3g}"
