"""MoCo v3: base encoder + projector + predictor, a momentum copy of encoder + projector, symmetric loss.

The MLP heads follow MoCo v3's ViT recipe (projector of 3 layers, predictor of 2, BatchNorm + ReLU between
layers and an affine-free BatchNorm at the end). Their BatchNorm uses the statistics of the *global*
batch (like SyncBatchNorm, but also on CPU with gloo), so a step under DDP computes the same loss and
gradients as one process on the same global batch.
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


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the batch of every rank in ``group``.

    One formula (sum and sum of squares, in float32) serves one process and many, so the two agree to
    rounding. The backward pass reduces the statistics' gradients across ranks (autograd all-reduce).
    """

    def __init__(self, num_features: int, affine: bool = True, group: dist.ProcessGroup | None = None):
        super().__init__(num_features, affine=affine)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), float(xf.shape[0]), device=xf.device)
        stats = torch.cat([xf.sum(0), (xf * xf).sum(0), count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.group) > 1:
            stats = _AllReduceSum.apply(stats, self.group)
        c = self.num_features
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


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
