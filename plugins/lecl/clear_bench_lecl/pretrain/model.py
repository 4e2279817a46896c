"""MoCo v3: base encoder + projector + predictor, a momentum copy of encoder + projector, symmetric loss.

The MLP heads follow MoCo v3's ViT recipe (projector of 3 layers, predictor of 2, BatchNorm + ReLU between
layers and an affine-free BatchNorm at the end). Their BatchNorm uses the statistics of the *global*
batch (like SyncBatchNorm, but also on CPU with gloo), so a step under DDP computes the same loss and
gradients as one process on the same global batch; :class:`GlobalBatchNorm2d` does the same for a conv
stem's BatchNorm2d under CPU DDP.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
from torch import nn

from clear_bench_lecl.pretrain.loss import LossConfig, contrastive_loss


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too (each rank's loss depends on every
    rank's statistics)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor,
                group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics cover the batch of every rank in ``group``.

    Per channel over every other dimension (N for ``[N, C]``, N, H, W for ``[N, C, H, W]``). One formula (sum
    and sum of squares, in float32) serves one process and many, so the two agree to rounding; the backward
    pass reduces the statistics' gradients across ranks (autograd all-reduce). The output is float32. State
    dict and eval-mode behaviour are those of the PyTorch class it derives from.
    """

    def __init__(self, num_features: int, affine: bool = True, group: dist.ProcessGroup | None = None,
                 eps: float = 1e-5, momentum: float | None = 0.1, track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.track_running_stats:
            return super().forward(x)
        self._check_input_dim(x)
        c = self.num_features
        dims = [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), float(xf.numel() // c), device=xf.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.group) > 1:
            stats = _AllReduceSum.apply(stats, self.group)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # momentum None: cumulative average, as in PyTorch
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(unbiased.detach(), factor)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class GlobalBatchNorm1d(_GlobalBatchNorm, nn.BatchNorm1d):
    """BatchNorm1d with the statistics of the global batch (see :class:`_GlobalBatchNorm`)."""


class GlobalBatchNorm2d(_GlobalBatchNorm, nn.BatchNorm2d):
    """BatchNorm2d with the statistics of the global batch (see :class:`_GlobalBatchNorm`): a conv stem's
    BatchNorm under DDP on CPU, where :class:`torch.nn.SyncBatchNorm` does not run."""


def convert_global_batchnorm(module: nn.Module, group: dist.ProcessGroup | None = None) -> nn.Module:
    """``module`` with each BatchNorm2d replaced by a :class:`GlobalBatchNorm2d` that holds the same
    parameters and buffers (the same tensor objects); returns the replacement when ``module`` is one."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        converted = GlobalBatchNorm2d(module.num_features, module.affine, group, module.eps, module.momentum,
                                      module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        replacement = convert_global_batchnorm(child, group)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose SyncBatchNorm and GlobalBatchNorm2d layers are plain BatchNorm2d again
    (the state dict is unchanged: what an encoder checkpoint stores and loads)."""
    groups = [getattr(m, name, None) for m in module.modules() for name in ("group", "process_group")]
    memo = {id(group): group for group in groups if group is not None}  # a process group cannot be copied
    module = copy.deepcopy(module, memo=memo)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SyncBatchNorm | GlobalBatchNorm2d):
                plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
                plain.load_state_dict(child.state_dict())
                plain.train(child.training)
                setattr(parent, name, plain)
    return module


def build_mlp(
    num_layers: int,
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    last_bn: bool = True,
    group: dist.ProcessGroup | None = None,
) -> nn.Sequential:
    """MoCo v3's MLP: Linear (no bias) [+ BN + ReLU] per hidden layer, affine-free BN after the last."""
    layers: list[nn.Module] = []
    for index in range(num_layers):
        dim_in = input_dim if index == 0 else hidden_dim
        dim_out = output_dim if index == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(dim_in, dim_out, bias=False))
        if index < num_layers - 1:
            layers.append(GlobalBatchNorm1d(dim_out, group=group))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(GlobalBatchNorm1d(dim_out, affine=False, group=group))
    return nn.Sequential(*layers)


class MoCoV3(nn.Module):
    """``forward(x1, x2, lesion)`` returns the symmetric loss ``loss(q1, k2) + loss(q2, k1)``.

    Call :meth:`update_momentum` once per optimizer step, before the step's forward passes (MoCo v3
    updates the momentum encoder right before it computes the keys).
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int,
        loss: LossConfig,
        dim: int = 256,
        mlp_dim: int = 4096,
        proj_layers: int = 3,
        pred_layers: int = 2,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.loss_config = loss
        self.group = group
        self.backbone = backbone
        self.projector = build_mlp(proj_layers, embed_dim, mlp_dim, dim, group=group)
        self.predictor = build_mlp(pred_layers, dim, mlp_dim, dim, group=group)
        self.momentum_backbone = copy.deepcopy(backbone)
        # Built anew (a process group cannot be deep-copied), then given the projector's weights.
        self.momentum_projector = build_mlp(proj_layers, embed_dim, mlp_dim, dim, group=group)
        self.momentum_projector.load_state_dict(self.projector.state_dict())
        for param in self._momentum_params():
            param.requires_grad_(False)

    def _online_params(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def _momentum_params(self) -> list[nn.Parameter]:
        return [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """EMA ``theta_k <- m theta_k + (1 - m) theta_q``."""
        online, momentum = self._online_params(), self._momentum_params()
        torch._foreach_mul_(momentum, m)
        torch._foreach_add_(momentum, online, alpha=1.0 - m)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, lesion: torch.Tensor | None = None) -> torch.Tensor:
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(x1))
            k2 = self.momentum_projector(self.momentum_backbone(x2))
        return contrastive_loss(q1, k2, lesion, self.loss_config, self.group) + contrastive_loss(
            q2, k1, lesion, self.loss_config, self.group
        )


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """MoCo v3's schedule: ``1 - (1 - base) (1 + cos(pi t / T)) / 2``, from ``base`` up to 1."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1))) * (1.0 - base)


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then a half-cosine to 0 (MoCo v3)."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
