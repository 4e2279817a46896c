"""Many MIL heads as one module: every parameter stacked on a leading ensemble dimension.

:func:`stack_heads` turns E separately built heads of one architecture into a single module whose
forward takes ``x [E, B, N, D]`` and ``mask [E, B, N]`` and runs every member on its own inputs in one
batched pass (``bmm`` instead of E small matrix products, one Python dispatch instead of E). It copies the
first head's structure and replaces each ``nn.Linear``, ``nn.LayerNorm`` and ``nn.Dropout`` by a member
version; any other parameter is stacked as it is. That works for heads whose ``forward`` indexes
dimensions from the end (the built-in ones do); a plugin head declares it with
``AggregatorSpec.ensemble``.

The stacked module's ``state_dict`` has the keys of a single head with a leading member dimension, so
member ``e``'s weights are ``{k: v[e] for k, v in stacked.state_dict().items()}``.

Dropout draws each member's noise from that member's own generator, in a shape that depends only on the
member's own rows: a member trained alone and the same member trained among others see the same masks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MemberStreams:
    """The random streams of the members (one CPU generator each) and each member's number of rows in the
    current batch (rows past it are padding and draw no noise)."""

    generators: list[torch.Generator]
    rows: list[int] = field(default_factory=list)

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the members ``keep`` (in that order)."""
        self.generators = [self.generators[i] for i in keep]
        self.rows = [self.rows[i] for i in keep] if self.rows else []


class MemberLinear(nn.Module):
    """``nn.Linear`` per member: ``weight [E, out, in]``, ``bias [E, out]``, input ``[E, ..., in]``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        # Not in the state dict: a member's weights stay those of a plain head on standardised inputs.
        self.register_buffer("input_mean", None, persistent=False)
        self.register_buffer("input_scale", None, persistent=False)

    def fold_input(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Apply this layer to ``(x - mean[e]) * scale[e]`` for member ``e`` (``[E, in]`` each) by scaling
        and shifting its weights on the fly: the same function of the parameters (so the same gradients)
        as standardising every input first, at the cost of the weights instead of the inputs."""
        self.input_mean, self.input_scale = mean, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        weight, bias = self.weight, self.bias
        if self.input_scale is not None:
            weight = weight * self.input_scale.unsqueeze(1)
            shift = torch.bmm(weight, self.input_mean.unsqueeze(-1)).squeeze(-1)
            bias = -shift if bias is None else bias - shift
        if bias is None:
            out = torch.bmm(flat, weight.transpose(1, 2))
        else:
            out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], out.shape[-1])


class MemberLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dimension, per-member affine ``weight [E, H]`` and ``bias [E, H]``."""

    def __init__(self, source: nn.LayerNorm, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        if len(source.normalized_shape) != 1:
            raise ValueError("member LayerNorm supports normalisation over the last dimension only")
        self.normalized_shape = tuple(source.normalized_shape)
        self.eps = source.eps
        self.weight = nn.Parameter(weight) if weight is not None else None
        self.bias = nn.Parameter(bias) if bias is not None else None

    def _member(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape(t.shape[0], *([1] * (ndim - 2)), t.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        if self.weight is not None:
            out = out * self._member(self.weight, x.dim())
        if self.bias is not None:
            out = out + self._member(self.bias, x.dim())
        return out


class MemberDropout(nn.Module):
    """Dropout whose noise for member ``e`` comes from ``streams.generators[e]``, drawn in the shape of that
    member's own rows only (``streams.rows[e]`` of dimension 1), so it does not depend on the others."""

    def __init__(self, p: float, streams: MemberStreams) -> None:
        super().__init__()
        self.p = p
        self.streams = streams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        noise = torch.zeros(x.shape, dtype=torch.float32)
        for member, (generator, rows) in enumerate(zip(self.streams.generators, self.streams.rows,
                                                       strict=True)):
            noise[member, :rows].uniform_(generator=generator)
        keep = (noise >= self.p).to(device=x.device, dtype=x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


def stack_heads(heads: Sequence[nn.Module], streams: MemberStreams) -> nn.Module:
    """One module running ``heads`` (same architecture, own weights) side by side on a leading member
    dimension. Raises ``TypeError`` for a torch layer with weights it cannot stack (convolutions,
    batch norm, ...): such a head trains one at a time."""
    if not heads:
        raise ValueError("no heads to stack")
    stacked = copy.deepcopy(heads[0])
    for name, module in list(stacked.named_modules()):
        members = [head.get_submodule(name) for head in heads]
        if isinstance(module, nn.Linear):
            _replace(stacked, name, MemberLinear(
                torch.stack([m.weight.detach() for m in members]),
                torch.stack([m.bias.detach() for m in members]) if module.bias is not None else None))
        elif isinstance(module, nn.LayerNorm):
            affine = module.weight is not None
            _replace(stacked, name, MemberLayerNorm(
                module, torch.stack([m.weight.detach() for m in members]) if affine else None,
                torch.stack([m.bias.detach() for m in members]) if module.bias is not None else None))
        elif isinstance(module, nn.Dropout):
            _replace(stacked, name, MemberDropout(module.p, streams))
        else:
            own = dict(module.named_parameters(recurse=False))
            if own and type(module).__module__.startswith("torch.nn"):
                raise TypeError(f"cannot stack {type(module).__name__} ({name or 'the head'}) across members")
            for key in own:
                setattr(module, key, nn.Parameter(torch.stack([getattr(m, key).detach() for m in members])))
            for key, _ in list(module.named_buffers(recurse=False)):
                module.register_buffer(key, torch.stack([getattr(m, key) for m in members]))
    return stacked


def member_state(stacked: nn.Module | Mapping[str, torch.Tensor], member: int) -> dict[str, torch.Tensor]:
    """Member ``member``'s weights, as the ``state_dict`` of a single head (copies), from the stacked
    module or from its ``state_dict``."""
    state = stacked.state_dict() if isinstance(stacked, nn.Module) else stacked
    return {key: value[member].detach().clone() for key, value in state.items()}


def select_members(stacked: nn.Module, keep: Sequence[int]) -> None:
    """Drop every member not in ``keep`` from ``stacked`` (in place, parameters and buffers)."""
    index = torch.as_tensor(list(keep), dtype=torch.int64)
    for module in stacked.modules():
        for key, parameter in module.named_parameters(recurse=False):
            module._parameters[key] = nn.Parameter(parameter.detach()[index.to(parameter.device)].clone())
        for key, buffer in module.named_buffers(recurse=False):
            module._buffers[key] = buffer[index.to(buffer.device)].clone()


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


class MemberAdamW:
    """AdamW over stacked parameters where each member steps only when it is active, with its own step
    count (bias correction); the update is torch's AdamW (decoupled weight decay, no amsgrad). ``lr`` and
    ``weight_decay`` may differ between members (one value per member: a tuning grid's candidates)."""

    def __init__(self, params: Sequence[nn.Parameter], members: int, lr: float | Sequence[float],
                 weight_decay: float | Sequence[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.weight_decay = _per_member(lr, members), _per_member(weight_decay, members)
        self.betas, self.eps = betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(members, dtype=torch.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the members where ``active`` (bool ``[E]``) is True."""
        beta1, beta2 = self.betas
        everyone = bool(active.all())
        self.steps += active.double()
        steps = self.steps.clamp(min=1)
        step_size = (self.lr / (1 - beta1**steps)).float()
        root_correction = (1 - beta2**steps).sqrt().float()
        decay = 1 - self.lr * self.weight_decay
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            shape = (p.shape[0],) + (1,) * (p.dim() - 1)
            factor = decay if isinstance(decay, float) else decay.float().to(p.device).view(shape)
            if everyone:
                p.mul_(factor)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / root_correction.to(p.device).view(shape)).add_(self.eps)
                p.sub_(step_size.to(p.device).view(shape) * m / denom)
                continue
            on = active.to(p.device).view(shape)
            new_m = torch.lerp(m, grad, 1 - beta1)
            new_v = v * beta2 + (1 - beta2) * grad * grad
            denom = new_v.sqrt() / root_correction.to(p.device).view(shape) + self.eps
            new_p = p * factor - step_size.to(p.device).view(shape) * new_m / denom
            p.copy_(torch.where(on, new_p, p))
            m.copy_(torch.where(on, new_m, m))
            v.copy_(torch.where(on, new_v, v))

    def select(self, keep: Sequence[int], params: Sequence[nn.Parameter]) -> None:
        """Keep the state of members ``keep`` only, now held by ``params`` (the re-stacked parameters)."""
        index = torch.as_tensor(list(keep), dtype=torch.int64)
        self.exp_avg = [m[index.to(m.device)].clone() for m in self.exp_avg]
        self.exp_avg_sq = [v[index.to(v.device)].clone() for v in self.exp_avg_sq]
        self.steps = self.steps[index]
        self.lr = self.lr if isinstance(self.lr, float) else self.lr[index]
        self.weight_decay = self.weight_decay if isinstance(self.weight_decay, float) \
            else self.weight_decay[index]
        self.params = list(params)


def _per_member(value: float | Sequence[float], members: int) -> float | torch.Tensor:
    """A float when every member has the same value (the update is then exactly torch's), else one
    float64 value per member."""
    if isinstance(value, int | float):
        return float(value)
    values = [float(v) for v in value]
    if len(values) != members:
        raise ValueError(f"expected {members} per-member values, got {len(values)}")
    return values[0] if len(set(values)) == 1 else torch.tensor(values, dtype=torch.float64)
