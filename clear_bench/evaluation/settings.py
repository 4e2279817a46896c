"""The hyper-parameters of MIL-head training, torch-free so configs and CLIs can read their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by every encoder, aggregator and fold of a benchmark.

    ``max_instances`` caps the random instances per bag drawn at each training step (``None``: all);
    ``eval_max_instances`` caps evaluation bags by an evenly spaced, deterministic subsample (``None``:
    all instances). ``device`` does not enter result keys.
    """

    epochs: int = 40
    lr: float = 2e-4
    weight_decay: float = 1e-2
    batch_size: int = 32
    patience: int = 8
    max_instances: int | None = 512
    eval_max_instances: int | None = None
    val_fraction: float = 0.2
    seed: int = 0
    standardize: bool = True
    """Z-score every embedding dimension with the training fold's instance statistics, so heads see
    comparable scales whatever the encoder (HU statistics and unit-norm CLIP features alike)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 1:
            problems.append(f"patience must be >= 1, got {self.patience}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        for name in ("max_instances", "eval_max_instances"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 or null, got {value}")
        if problems:
            raise ValueError("; ".join(problems))

    def key(self) -> dict:
        """The fields that determine a result (everything but the device)."""
        values = asdict(self)
        values.pop("device")
        return values
