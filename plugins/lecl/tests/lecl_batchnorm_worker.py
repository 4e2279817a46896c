"""One rank of a torchrun job that trains a conv-stem ViT for one step, twice: as the trainer does
(global-batch BatchNorm in the stem), then with the stem's BatchNorm left per-rank.
``python lecl_batchnorm_worker.py GLOBAL_RECIPE LOCAL_RECIPE OUT`` writes ``OUT/{global,local}-rank{R}.pt``
(loss, gradients, buffers and BatchNorm types after the first step); the global run then trains to its
end, so its folder holds the training state and the encoder checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from clear_bench_lecl.pretrain import train
from clear_bench_lecl.pretrain.config import load_config

NORMS = {"BatchNorm2d", "GlobalBatchNorm2d", "SyncBatchNorm"}


def first_step(trainer: train.Trainer) -> dict:
    """The loss of the first optimizer step, the gradients it left, and the buffers after it."""
    trainer.model.train()
    loss = trainer._train_step(trainer._loader(0, 0))
    model = trainer.model
    return {
        "loss": loss,
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "norms": sorted({type(m).__name__ for m in model.backbone.modules()} & NORMS),
    }


def main() -> None:
    global_recipe, local_recipe, out = sys.argv[1:4]
    ctx = train.init_distributed("cpu")
    trainer = train.Trainer(load_config(global_recipe), ctx)
    torch.save(first_step(trainer), Path(out) / f"global-rank{ctx.rank}.pt")
    trainer.step = 1
    trainer.fit()  # continues from step 1, as a resumed run does; writes the encoder checkpoint

    # Per-rank statistics: the stem keeps nn.BatchNorm2d (what CPU DDP did before the conversion).
    train.global_batchnorm = lambda backbone, ctx: backbone
    local = train.Trainer(load_config(local_recipe), ctx)
    torch.save(first_step(local), Path(out) / f"local-rank{ctx.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
