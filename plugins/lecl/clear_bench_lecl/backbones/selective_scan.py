"""The selective scan (S6) of Mamba: a recurrence whose step size, input and output maps depend on the input.

For every channel ``d`` and state ``n``, with ``dt = softplus(delta + delta_bias)``::

    h[t] = exp(dt[t] * A[d, n]) * h[t-1] + dt[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t, n] + D[d] * u[t];    out = y * silu(z)   (when z is given)

Three interchangeable implementations share mamba-ssm's ``selective_scan_fn`` signature and shapes:
``u, delta, z: [batch, dim, length]``, ``A: [dim, state]``, ``B, C: [batch, state, length]`` or
``[batch, groups, state, length]`` (channel ``d`` uses group ``d // (dim // groups)``),
``D, delta_bias: [dim]``.

- :func:`selective_scan_reference`: the step-by-step recurrence, the ground truth of the tests.
- :func:`selective_scan_torch`: chunks the sequence and runs a log-depth parallel (Hillis-Steele) scan inside
  each chunk; every factor it multiplies lies in [0, 1], so it is as stable as the recurrence.
- mamba-ssm's CUDA kernel, used by :func:`selective_scan` when that package imports and the inputs are on a
  CUDA device. It is imported lazily: the package is an optional extra that builds only on CUDA machines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Backend = Literal["auto", "torch", "cuda", "reference"]


def _prepare(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, delta_bias: Tensor | None, delta_softplus: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """Float32 inputs, the final step sizes, and B/C as ``[batch, groups, length, state]``."""
    if A.dim() != 2:
        raise ValueError(f"A must be [dim, state], got shape {tuple(A.shape)}")
    if B.dim() not in (3, 4) or C.dim() not in (3, 4):
        raise ValueError("B and C must be input-dependent: [batch, state, length] or "
                         "[batch, groups, state, length]")
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = (B.unsqueeze(1) if B.dim() == 3 else B).float().transpose(-1, -2)
    C = (C.unsqueeze(1) if C.dim() == 3 else C).float().transpose(-1, -2)
    groups = B.shape[1]
    if u.shape[1] % groups:
        raise ValueError(f"dim {u.shape[1]} is not divisible by the {groups} groups of B/C")
    return u, delta, A, B, C, groups


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_reference(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False,
) -> Tensor:
    """The recurrence taken one time step at a time (slow; the fast scans are tested against it)."""
    dtype = u.dtype
    u, delta, A, B, C, groups = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    per_group = dim // groups
    B = B.repeat_interleave(per_group, dim=1)  # [batch, dim, length, state]
    C = C.repeat_interleave(per_group, dim=1)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, :, t] * u[:, :, t, None]
        ys.append((h * C[:, :, t]).sum(-1))
    return _finish(torch.stack(ys, dim=-1), u, D, z, dtype)


# Decay factors below this are set to 0: their products would be subnormal floats, which x86 CPUs process
# ~100x slower, while the contribution they carry is far below float32 resolution.
_FLUSH = 1e-18
_LOG_FLUSH = -41.0  # exp(-41) > _FLUSH


def _decay(log_decay: Tensor) -> Tensor:
    """``exp(log_decay)`` with values under ``_FLUSH`` set to exactly 0 (never subnormal)."""
    return torch.exp(log_decay.clamp(min=_LOG_FLUSH)).masked_fill(log_decay < _LOG_FLUSH, 0.0)


def _parallel_scan(decay: Tensor, drive: Tensor) -> tuple[Tensor, Tensor]:
    """Hillis-Steele scan over dim -2 of ``h[t] = decay[t] * h[t-1] + drive[t]`` from ``h[-1] = 0``.

    Returns the cumulative decay (product of ``decay[0..t]``) and the states. ``log2(length)`` steps.
    """
    length = decay.shape[-2]
    step = 1
    while step < length:
        carried = drive[..., step:, :] + decay[..., step:, :] * drive[..., :-step, :]
        drive = torch.cat([drive[..., :step, :], carried], dim=-2)
        product = decay[..., step:, :] * decay[..., :-step, :]
        decay = torch.cat([decay[..., :step, :], product.masked_fill(product < _FLUSH, 0.0)], dim=-2)
        step *= 2
    return decay, drive


def selective_scan_torch(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, chunk_size: int = 64,
) -> Tensor:
    """Pure-PyTorch selective scan: sequential over chunks, parallel (log-depth) within a chunk.

    Memory is bounded by ``batch x dim x chunk_size x state`` whatever the sequence length; autograd works.
    """
    dtype = u.dtype
    u, delta, A, B, C, groups = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    per_group = dim // groups
    # [batch, groups, per_group, length(, state)] so that B and C broadcast over the channels of their group
    u_g = u.view(batch, groups, per_group, length)
    delta_g = delta.view(batch, groups, per_group, length)
    A_g = A.view(groups, per_group, 1, A.shape[1])
    B_g, C_g = B.unsqueeze(2), C.unsqueeze(2)
    h = u.new_zeros(batch, groups, per_group, 1, A.shape[1])
    ys = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        dt = delta_g[..., start:stop, None]
        decay = _decay(dt * A_g)
        drive = dt * u_g[..., start:stop, None] * B_g[..., start:stop, :]
        cum_decay, states = _parallel_scan(decay, drive)
        states = states + cum_decay * h
        ys.append((states * C_g[..., start:stop, :]).sum(-1))
        h = states[..., -1:, :]
    y = torch.cat(ys, dim=-1).reshape(batch, dim, length)
    return _finish(y, u, D, z, dtype)


@functools.cache
def _cuda_selective_scan() -> Callable[..., Tensor] | None:
    """mamba-ssm's CUDA kernel, or None when the optional package is not installed or does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a build made for another CUDA/torch version
        return None
    return selective_scan_fn


def cuda_scan_available() -> bool:
    """True when mamba-ssm's kernel imports and a CUDA device is present."""
    return torch.cuda.is_available() and _cuda_selective_scan() is not None


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, backend: Backend = "auto",
) -> Tensor:
    """Dispatch: mamba-ssm's kernel for CUDA inputs when it imports (``auto`` or ``cuda``), else PyTorch."""
    if backend == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend in ("auto", "cuda"):
        kernel = _cuda_selective_scan() if u.is_cuda else None
        if kernel is not None:
            return kernel(u.contiguous(), delta.contiguous(), A.float().contiguous(), B.contiguous(),
                          C.contiguous(), None if D is None else D.float(),
                          None if z is None else z.contiguous(),
                          None if delta_bias is None else delta_bias.float(), delta_softplus)
        if backend == "cuda":
            raise RuntimeError("the CUDA selective scan needs mamba-ssm (the `gpu` extra) and CUDA inputs")
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
