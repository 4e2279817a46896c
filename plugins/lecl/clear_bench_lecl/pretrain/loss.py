"""Contrastive losses of LeCL pretraining: the paper's lesion-weighted InfoNCE, the public code's variant
and plain MoCo v3 InfoNCE.

For query ``i`` with positive key ``i`` among the keys ``j`` of the *global* batch (gathered from every
rank) and ``L`` the keys whose slice carries a lesion, with ``s = q.k / tau`` on unit vectors:

* ``lecl`` (paper form): ``-log( e^{s_ii} / ( sum_j e^{s_ij} + lambda * sum_{j in L, j != i} e^{s_ij} ) )``:
  other lesion slices are pushed away ``1 + lambda`` times as hard as other slices.
* ``lecl-reference`` (the public CLEAR code): ``lambda`` sits inside the exponent and lesion keys are
  counted twice, ``-log( e^{s_ii} / ( sum_j e^{s_ij} + sum_{j in L, j != i} e^{lambda * s_ij} ) )``; like that
  code it falls back to InfoNCE when ``lambda <= 0`` or no key in the global batch is a lesion slice.
* ``infonce``: MoCo v3's loss, ``-log( e^{s_ii} / sum_j e^{s_ij} )``.

Every variant is the mean over the local queries; as in MoCo v3 it is multiplied by ``2 * tau`` (a
temperature-independent gradient scale, so MoCo v3's learning rates carry over) unless ``scale_by_2tau``
is off. Under DDP the mean of the per-rank losses equals the single-process loss on the same global
batch, because keys are gathered in rank order and each rank's positives are offset by ``rank * N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clear_bench_lecl.pretrain.config import LOSS_VARIANTS


@dataclass(frozen=True)
class LossConfig:
    """Which contrastive loss, its lesion weight ``lam`` (lambda; the seed's ``--sample-weight``), tau."""

    variant: str = "lecl"
    lam: float = 1.0
    temperature: float = 0.2
    scale_by_2tau: bool = True

    def __post_init__(self) -> None:
        if self.variant not in LOSS_VARIANTS:
            raise ValueError(f"unknown loss '{self.variant}' (known: {', '.join(LOSS_VARIANTS)})")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")


def loss_from_logits(
    logits: torch.Tensor, lesion_keys: torch.Tensor | None, offset: int, variant: str, lam: float
) -> torch.Tensor:
    """Mean loss of ``logits [N, M]`` (already divided by tau) whose positives sit at ``(i, i + offset)``.

    ``lesion_keys`` is a bool mask over the ``M`` keys (``None`` means no lesion slices).
    """
    logits = logits.float()
    n, m = logits.shape
    rows = torch.arange(n, device=logits.device)
    positives = rows + offset
    if variant == "infonce" or lesion_keys is None or lam == 0 or not bool(lesion_keys.any()):
        return F.cross_entropy(logits, positives)
    lesion = lesion_keys.to(device=logits.device, dtype=torch.bool)
    # Lesion keys other than each query's own positive.
    extra = lesion.unsqueeze(0).expand(n, m).clone()
    extra[rows, positives] = False
    positive_logit = logits[rows, positives]
    if variant == "lecl":
        # sum_j w_ij e^{s_ij} with w_ij = 1 + lambda [j in L, j != i], as one log-sum-exp.
        log_weights = torch.log1p(extra.to(logits.dtype) * lam)
        denominator = torch.logsumexp(logits + log_weights, dim=1)
    elif variant == "lecl-reference":
        scaled = torch.where(extra, lam * logits, torch.full_like(logits, float("-inf")))
        denominator = torch.logsumexp(torch.cat([logits, scaled], dim=1), dim=1)
    else:
        raise ValueError(f"unknown loss '{variant}' (known: {', '.join(LOSS_VARIANTS)})")
    return (denominator - positive_logit).mean()


def contrastive_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    lesion: torch.Tensor | None,
    config: LossConfig,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Loss of local queries ``q [N, D]`` against the keys ``k [N, D]`` of every rank (no gradient to keys).

    ``lesion`` is the local bool mask of lesion slices (gathered like the keys). Computed in float32
    under autocast too: the features may arrive in bf16, the logits, softmax and weighting never are.
    """
    q = F.normalize(q.float(), dim=1)
    with torch.no_grad():
        k = F.normalize(k.float(), dim=1)
        keys = gather_from_ranks(k, group)
        lesion_keys = None
        if lesion is not None and config.variant != "infonce":
            lesion_keys = gather_from_ranks(lesion.to(torch.uint8), group).bool()
    rank = dist.get_rank(group) if _distributed(group) else 0
    logits = similarity_logits(q, keys, config.temperature)  # the one op autocast would run in bf16
    loss = loss_from_logits(logits, lesion_keys, rank * q.shape[0], config.variant, config.lam)
    return loss * (2.0 * config.temperature) if config.scale_by_2tau else loss


def similarity_logits(q: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """``q . k / tau`` of every query and key, in float32 even inside an autocast region."""
    with torch.autocast(q.device.type, enabled=False):
        return q.float() @ keys.float().t() / temperature


@torch.no_grad()
def gather_from_ranks(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank in rank order (the identity in a single process)."""
    if not _distributed(group):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _distributed(group: dist.ProcessGroup | None) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
