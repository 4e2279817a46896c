"""The ``lecl`` pretrainer: ``clear-bench pretrain lecl --config FILE [overrides]`` (torchrun for DDP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from clear_bench_lecl.pretrain.config import OVERRIDES, load_config
from clear_bench_lecl.pretrain.loss import LOSS_VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``clear-bench pretrain lecl``."""
    parser.add_argument(
        "--config", metavar="FILE", required=True, help="pretraining YAML (see benchmarks/pretrain/)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="continue from a training-state checkpoint (default: the newest in the output folder)",
    )
    parser.add_argument("--output-dir", metavar="DIR", help="run folder (runtime.output_dir)")
    parser.add_argument("--experiment", help="experiment name used in file names")
    parser.add_argument("--arch", help="backbone (model.arch), e.g. vit_small_patch16, mambaout_femto")
    parser.add_argument("--epochs", type=int, help="optim.epochs")
    parser.add_argument("--batch-size", type=int, help="global batch over all ranks (optim.batch_size)")
    parser.add_argument("--lr", type=float, help="base learning rate, scaled by batch/256 (optim.base_lr)")
    parser.add_argument(
        "--sampling",
        choices=("lesion", "none"),
        help="lesion: LeCL lesion-centred views; none: plain MoCo v3",
    )
    parser.add_argument("--sample-weight", type=float, help="lambda of the LeCL loss (loss.sample_weight)")
    parser.add_argument("--loss", choices=LOSS_VARIANTS, help="loss.name")
    parser.add_argument("--seed", type=int, help="seed of initialisation, batch order and augmentation")
    parser.add_argument(
        "--max-steps", type=int, help="stop after this many optimizer steps with a checkpoint (resume later)"
    )
    parser.add_argument("--checkpoint-every", type=int, help="runtime.checkpoint_every_steps")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per process")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="runtime.device")


def run(args: argparse.Namespace) -> Path | None:
    """Load the YAML with the command-line overrides and train; returns the encoder checkpoint path."""
    from clear_bench_lecl.pretrain.train import run_pretraining

    overrides = {key: getattr(args, dest, None) for dest, key in OVERRIDES.items()}
    config = load_config(args.config, overrides)
    return run_pretraining(config, resume=args.resume)
