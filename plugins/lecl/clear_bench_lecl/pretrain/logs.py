"""The loss log of a pretraining run: a CSV row per optimizer step and a PNG loss curve."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

COLUMNS = ("step", "epoch", "loss", "lr", "momentum", "images_per_s", "elapsed_s")


class LossLog:
    """Appends rows to ``path`` (CSV); on resume, rows from the resumed step on are dropped first."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        rows = read_log(path) if resume_step and path.exists() else []
        rows = [row for row in rows if int(row["step"]) <= resume_step]
        _write_atomic(path, rows)
        self._handle = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS)

    def append(self, **row: float) -> None:
        self._writer.writerow({key: _fmt(row[key]) for key in COLUMNS})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def plot_loss(csv_path: Path, png_path: Path, title: str) -> None:
    """Loss per step and its running mean, written atomically as PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(csv_path)
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    losses = [float(r["loss"]) for r in rows]
    window = max(1, len(losses) // 20)
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    ax.plot(steps, smooth, lw=1.8, label=f"running mean ({window} steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{png_path.name}.", suffix=".tmp", dir=png_path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def _write_atomic(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.8g}"
