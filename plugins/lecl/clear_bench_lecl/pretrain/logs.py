"""The loss log of a pretraining run: a CSV row per optimizer step and a PNG loss curve."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from clear_bench.atomic import atomic_write, atomic_write_text

COLUMNS = ("step", "epoch", "loss", "lr", "momentum", "images_per_s", "elapsed_s")


class LossLog:
    """Appends rows to ``path`` (CSV); on resume, rows from the resumed step on are dropped first."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        rows = read_log(path) if resume_step and path.exists() else []
        rows = [row for row in rows if int(row["step"]) <= resume_step]
        _write_rows(path, rows)
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
    try:
        atomic_write(png_path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """The header and ``rows``, replacing ``path`` atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.8g}"
