"""The LeCL / MoCo v3 training loop: single process, or DDP under torchrun (gloo on CPU, NCCL on GPU).

One optimizer step = ``accum_steps`` micro-batches of the global batch; the learning rate (warm-up then
half-cosine) and the momentum (cosine to 1) are pure functions of the step, and the batches of a step are
a pure function of ``(seed, epoch, step)``, so a resumed run continues exactly where it stopped. Rank 0
writes the training state every ``checkpoint_every_steps`` steps (or each epoch), the loss log (CSV + PNG)
and, at the end, the encoder checkpoint that the LeCL encoders load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from clear_bench.data.slices import SlicePlan
from clear_bench.errors import ConfigError, UserError
from clear_bench.extraction import resolve_device, resolve_precision
from clear_bench.schema import Problems, check_mapping, read_yaml
from clear_bench.specs import RESUME_IF_PRESENT, Preprocessing, ScanSource
from clear_bench_lecl.backbones import build_backbone
from clear_bench_lecl.checkpoint import save_encoder_checkpoint
from clear_bench_lecl.pretrain.config import PretrainConfig, output_dir, training_values
from clear_bench_lecl.pretrain.data import (
    Augment,
    BatchPlan,
    EpochBatches,
    PretrainDataset,
    SliceTable,
    collate,
    select_scan_ids,
)
from clear_bench_lecl.pretrain.logs import LossLog, plot_loss
from clear_bench_lecl.pretrain.loss import LossConfig
from clear_bench_lecl.pretrain.model import (
    MoCoV3,
    convert_global_batchnorm,
    cosine_momentum,
    learning_rate,
    plain_batchnorm,
)
from clear_bench_lecl.pretrain.state import (
    ResumeError,
    capture_rng,
    checkpoint_name,
    checkpoint_stem,
    list_checkpoints,
    load_state,
    restore_rng,
    run_stem,
    save_state,
)
from clear_bench_lecl.pretrain.store import open_slice_store


@dataclass
class DistContext:
    """This process's place in the job: rank, world size, device, and a process group for the model's
    own collectives (key gathering, global BatchNorm), kept apart from DDP's gradient reduction."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: dist.ProcessGroup | None = None
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun job described by the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ctx = DistContext(local_rank=local_rank)
    try:
        ctx.device = resolve_device(device)  # the core's: auto -> CUDA when available; this rank's GPU
    except ConfigError as exc:
        raise ConfigError(f"runtime.device: {exc}") from None
    use_cuda = ctx.device.type == "cuda"
    if use_cuda:
        if ctx.device.index is None:
            ctx.device = torch.device("cuda", local_rank)
        torch.cuda.set_device(ctx.device)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            ctx.initialised_here = True
        ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()
        ctx.group = dist.new_group(backend="nccl" if use_cuda else "gloo")
    return ctx


def run_pretraining(
    config: PretrainConfig, resume: str | Path | bool | None = None, source: ScanSource | None = None
) -> Path | None:
    """Train as configured; returns the encoder checkpoint path, or ``None`` when stopped by ``max_steps``.

    ``resume`` is a training-state checkpoint path, ``True`` for the newest one in the output folder,
    ``"if-present"`` for the newest one when there is one (a fresh start otherwise), or
    ``None``. ``source`` replaces the configured scan source (for callers that hold one already).
    """
    ctx = init_distributed(config.runtime.device)
    try:
        return Trainer(config, ctx, source).fit(resume)
    finally:
        if ctx.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def build_source(config: PretrainConfig) -> ScanSource:
    """The configured scan source, ``data.options`` checked against the options it declares (each problem
    with the recipe's file and line) and nested components built by the core."""
    from clear_bench.components import build_options
    from clear_bench.registry import load_registry

    registry = load_registry(config.plugins)
    spec = registry.source(config.data.source)
    recipe = Path(config.path) if config.path else None
    problems = Problems(recipe or "<defaults>", read_yaml(recipe)[1] if recipe else {})
    given = check_mapping(config.data.options, spec.options, "data.options", problems,
                          base=recipe.parent if recipe else None, defaults=False)
    problems.raise_if_any()
    return spec.build(build_options(registry, spec.options, given))


def slice_plan(config: PretrainConfig) -> SlicePlan:
    """How slices are windowed and stored: grey per window (repeated to channels later) or stacked."""
    per_window = config.data.window_mode == "per-window"
    return SlicePlan(
        windows=tuple(config.data.windows),
        window_mode=config.data.window_mode,
        slice_step=config.data.slice_step,
        image_size=config.data.slice_size or config.model.image_size,
        channels=1 if per_window else config.model.channels,
    )


def build_model(config: PretrainConfig, group: dist.ProcessGroup | None = None) -> MoCoV3:
    """The MoCo v3 model, initialised from ``config.seed`` (the same on every rank and every run)."""
    torch.manual_seed(config.seed)
    m = config.model
    backbone = build_backbone(m.arch, img_size=m.image_size, in_chans=m.channels, **m.backbone_kwargs())
    if m.stop_grad_patch_embed:
        frozen = patch_projections(backbone)
        if not frozen:
            raise ConfigError(f"model.stop_grad_patch_embed: arch '{m.arch}' has no patch embedding")
        for module in frozen:
            module.requires_grad_(False)
    loss = LossConfig(
        config.loss.name, config.loss.sample_weight, config.loss.temperature, config.loss.scale_by_2tau
    )
    return MoCoV3(
        backbone,
        int(backbone.embed_dim),
        loss,
        dim=m.dim,
        mlp_dim=m.mlp_dim,
        proj_layers=m.proj_layers,
        pred_layers=m.pred_layers,
        group=group,
    )


def global_batchnorm(backbone: nn.Module, ctx: DistContext) -> nn.Module:
    """``backbone`` with BatchNorm2d layers that normalise with the statistics of the global batch.

    On CUDA: SyncBatchNorm (fused kernels that keep no float32 copy of the stem's activations). Elsewhere:
    :class:`~.model.GlobalBatchNorm2d`, as SyncBatchNorm runs on GPUs only. Both keep BatchNorm2d's state
    dict, and both match one process on the global batch.
    """
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    return convert_global_batchnorm(backbone, ctx.group)


def patch_projections(backbone: nn.Module) -> list[nn.Module]:
    """The final projection of each patch embedding: what MoCo v3's stop-gradient trick freezes.

    A patchify ViT's ``patch_embed.proj`` is one conv (its norm stays trainable); in a conv stem the
    projection is the stem's last conv or linear layer, and the convs and BatchNorms before it keep
    training.
    """
    found = []
    for name, module in backbone.named_modules():
        if not name.endswith("patch_embed"):
            continue
        head = getattr(module, "proj", module)
        layers = [layer for layer in head.modules() if isinstance(layer, nn.Conv2d | nn.Linear)]
        if isinstance(head, nn.Conv2d | nn.Linear):
            found.append(head)
        elif layers:
            found.append(layers[-1])
    return found


def encoder_name(config: PretrainConfig) -> str:
    """``{arch}-{mode}-{experiment}-encoder.pt``: the final encoder checkpoint's file name."""
    stem = checkpoint_stem(config.model.arch, config.mode, config.experiment)
    return stem.replace("-moco-", "-", 1) + "-encoder.pt"


def encoder_arch_kwargs(config: PretrainConfig) -> dict[str, Any]:
    return {
        "img_size": config.model.image_size,
        "in_chans": config.model.channels,
        **config.model.backbone_kwargs(),
    }


class Trainer:
    """Holds the model, optimizer, data and logs of one run on one rank."""

    def __init__(self, config: PretrainConfig, ctx: DistContext, source: ScanSource | None = None) -> None:
        self.config, self.ctx = config, ctx
        if config.runtime.threads:
            torch.set_num_threads(config.runtime.threads)
        self.out = output_dir(config)
        self.stem = run_stem(config)
        self.encoder_path = self.out / encoder_name(config)
        self.log_path = self.out / f"{self.stem}-loss.csv"
        source = source or build_source(config)
        ids = select_scan_ids(source, config.data.scan_range)
        self.table: SliceTable = open_slice_store(  # built by local rank 0, mapped by every rank
            config.data, source, ids, slice_plan(config), builder=ctx.local_rank == 0,
            progress=ctx.main and config.runtime.progress,
        )
        a = config.augment
        self.dataset = PretrainDataset(
            self.table,
            config.model.image_size,
            config.model.channels,
            config.model.mean,
            config.model.std,
            config.sampling,
            Augment(a.crop_min, tuple(a.blur), (0.1, 2.0), tuple(a.solarize), a.hflip, a.vflip, a.jitter),
        )
        o = config.optim
        try:
            self.plan = BatchPlan(
                self.table.is_lesion,
                o.batch_size,
                ctx.world,
                ctx.rank,
                o.accum_steps,
                config.lesion_oversample,
                config.seed,
            )
        except ValueError as exc:
            raise ConfigError(f"optim.batch_size: {exc}") from None
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.total_steps = o.epochs * self.steps_per_epoch
        self.warmup_steps = round(o.warmup_epochs * self.steps_per_epoch)
        self.peak_lr = o.base_lr * o.batch_size / 256.0

        self.model = build_model(config, ctx.group)
        if ctx.world > 1:
            for name in ("backbone", "momentum_backbone"):  # e.g. the conv stem's BatchNorm
                setattr(self.model, name, global_batchnorm(getattr(self.model, name), ctx))
        self.model.to(ctx.device)
        # Per-rank streams for anything stochastic inside the model (dropout, drop-path); data randomness
        # comes from the batch plan and is rank-independent.
        random.seed(config.seed + ctx.rank)
        np.random.seed(config.seed + ctx.rank)
        torch.manual_seed(config.seed + 1 + ctx.rank)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=o.weight_decay)
        self.ddp: nn.Module = self.model
        if ctx.world > 1:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=device_ids, **_no_buffer_broadcast()
            )
        self.autocast_dtype = _autocast_dtype(o.precision, ctx.device)
        self.step = 0
        self.momentum = o.momentum
        self._pending_state: tuple[bytes, dict[str, Any]] | None = None

    # --- checkpoints ------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        rngs, digests = [capture_rng()], [state_digest(self.model.state_dict())]
        if self.ctx.world > 1:
            rngs, digests = self._gather(rngs[0]), self._gather(digests[0])
            if self.ctx.main and len(set(digests)) > 1:
                print(f"warning: ranks hold different weights at step {self.step} (digests {digests})",
                      flush=True)
        epoch, position = divmod(self.step, self.steps_per_epoch)
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.ctx.world,
            "training_fingerprint": self.config.training_fingerprint(),
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.step, "warmup_steps": self.warmup_steps, "peak_lr": self.peak_lr},
            "momentum": {"step": self.step, "value": self.momentum},
            "sampler": {
                "epoch": epoch,
                "position": position,
                "seed": self.config.seed,
                "epoch_length": self.plan.epoch_length,
            },
            "rng": rngs,
            "rank_digests": digests,
        }

    def _gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.ctx.world
        dist.all_gather_object(values, value, group=self.ctx.group)
        return values

    def save_checkpoint(self) -> Path:
        """Write the training state (rank 0; every rank takes part in gathering RNG states)."""
        state = self._state()
        epoch = -(-self.step // self.steps_per_epoch)  # the epoch in progress or just finished, from 1
        path = self.out / checkpoint_name(self.stem, max(epoch, 1))
        if self.ctx.main:
            save_state(path, state)
            keep = self.config.runtime.keep_checkpoints
            if keep:
                for old in list_checkpoints(self.out, self.stem)[:-keep]:
                    old.unlink(missing_ok=True)
            plot_loss(self.log_path, self.out / f"{self.stem}-loss.png", self._title())
        self._barrier()
        return path

    def resume_from(self, resume: str | Path | bool) -> None:
        """Continue from a training state. Rank 0 picks and checks the file in its own output folder;
        every rank then holds the same state: its local copy when its bytes are rank 0's, else the bytes
        rank 0 sends (ranks on nodes without a shared filesystem see other folders, or none)."""
        chosen = self._agree(lambda: self._read_resume_state(resume))
        if chosen is None:
            return
        path, digest = Path(chosen[0]), chosen[1]
        state = self._agreed_state(path, digest)
        self._pending_state = None
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.momentum = float(state["momentum"]["value"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world:
            restore_rng(rngs[self.ctx.rank])
        if self.ctx.main:
            print(f"resumed from {path} at step {self.step}/{self.total_steps}", flush=True)

    def _read_resume_state(self, resume: str | Path | bool) -> tuple[str, str] | None:
        """Rank 0: the state file to resume from and its sha256 (``None``: start afresh), checked against
        this run's settings; its bytes and content are kept for :meth:`_agreed_state`."""
        if resume == RESUME_IF_PRESENT:  # a benchmark run: continue when a state exists, else start afresh
            found = list_checkpoints(self.out, self.stem)
            if not found:
                return None
            resume = found[-1]
        if resume is True:
            found = list_checkpoints(self.out, self.stem)
            if not found:
                raise ResumeError(
                    f"--resume: no checkpoint {checkpoint_name(self.stem, 1).replace('0001', '*')}"
                    f" in {self.out}"
                )
            path = found[-1]
        else:
            path = Path(str(resume))
        if not path.is_file():
            raise ResumeError(f"--resume: no training-state checkpoint at {path}")
        data = path.read_bytes()
        state = load_state(path, data)
        if state["training_fingerprint"] != self.config.training_fingerprint():
            changed = _changed_keys(training_values(state["config"]), training_values(self.config.to_dict()))
            raise ResumeError(
                f"{path}: written by a run with other settings ({', '.join(changed) or '?'}); "
                "resume with the same configuration or start a new output folder"
            )
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ResumeError(
                f"{path}: {state['steps_per_epoch']} steps per epoch, this data gives "
                f"{self.steps_per_epoch}; the scans changed"
            )
        self._pending_state = (data, state)
        return str(path), hashlib.sha256(data).hexdigest()

    def _agreed_state(self, path: Path, digest: str) -> dict[str, Any]:
        """Rank 0's state on every rank: read locally where the file there has rank 0's bytes, else sent."""
        if self.ctx.main:
            assert self._pending_state is not None
            data, state = self._pending_state
            if self.ctx.world == 1:
                return state
        else:
            data = path.read_bytes() if path.is_file() else None
            if data is not None and hashlib.sha256(data).hexdigest() != digest:
                data = None  # another run's file of the same name
        if not all(self._gather(data is not None)):
            box = [data if self.ctx.main else None]
            dist.broadcast_object_list(box, src=0, group=self.ctx.group)
            data = data if data is not None else box[0]
        return state if self.ctx.main else load_state(path, data)

    def _agree(self, decide: Callable[[], Any]) -> Any:
        """``decide()`` as rank 0 sees it, on every rank: a choice that depends on the files a rank sees
        must be the same everywhere, or the ranks take different collectives and wait for each other
        forever. An exception there is raised on every rank."""
        if self.ctx.world == 1:
            return decide()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.ctx.main:
            try:
                box[0] = ("value", decide())
            except Exception as exc:
                failure = exc
                box[0] = ("error", isinstance(exc, UserError), str(exc))
        dist.broadcast_object_list(box, src=0, group=self.ctx.group)
        if failure is not None:
            raise failure
        if box[0][0] == "error":
            _, user, message = box[0]
            raise ResumeError(message) if user else RuntimeError(f"rank 0 failed: {message}")
        return box[0][1]

    # --- training ---------------------------------------------------------------------------------

    def fit(self, resume: str | Path | bool | None = None) -> Path | None:
        """Train to the end (or to ``runtime.max_steps``); see :func:`run_pretraining`."""
        if resume:
            self.resume_from(resume)
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._describe()
        log = LossLog(self.log_path, self.step) if self.ctx.main else None
        max_steps = self.config.runtime.max_steps
        stop_at = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        every = self.config.runtime.checkpoint_every_steps
        bar = self._progress_bar(stop_at)
        self.model.train()
        start_time = time.perf_counter()
        try:
            while self.step < stop_at:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                batches = self._loader(epoch, position)
                while position < self.steps_per_epoch and self.step < stop_at:
                    tic = time.perf_counter()
                    loss = self._train_step(batches)
                    self.step += 1
                    position += 1
                    rate = self.config.optim.batch_size / max(time.perf_counter() - tic, 1e-9)
                    if log is not None:
                        log.append(
                            step=self.step,
                            epoch=self.step / self.steps_per_epoch,
                            loss=loss,
                            lr=self.optimizer.param_groups[0]["lr"],
                            momentum=self.momentum,
                            images_per_s=rate,
                            elapsed_s=time.perf_counter() - start_time,
                        )
                    if bar is not None:
                        bar.set_postfix(
                            epoch=f"{self.step / self.steps_per_epoch:.2f}",
                            loss=f"{loss:.4f}",
                            img_s=f"{rate:.1f}",
                        )
                        bar.update(1)
                    epoch_end = position == self.steps_per_epoch
                    if (every and self.step % every == 0) or (not every and epoch_end):
                        self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        if self.step < self.total_steps:
            path = self.save_checkpoint()
            if self.ctx.main:
                print(
                    f"stopped at step {self.step}/{self.total_steps} (runtime.max_steps); training state: "
                    f"{path}; continue with --resume",
                    flush=True,
                )
            return None
        unsaved = bool(every and self.step % every)
        if self._agree(lambda: unsaved or not list_checkpoints(self.out, self.stem)):
            self.save_checkpoint()
        return self._save_encoder()

    def _train_step(self, batches: Iterator[tuple[torch.Tensor, ...]]) -> float:
        o = self.config.optim
        lr = learning_rate(self.step, self.total_steps, self.warmup_steps, self.peak_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.momentum = (
            cosine_momentum(self.step, self.total_steps, o.momentum) if o.momentum_cosine else o.momentum
        )
        self.model.update_momentum(self.momentum)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.ctx.device)
        for micro in range(o.accum_steps):
            view1, view2, lesion = next(batches)
            view1 = view1.to(self.ctx.device, non_blocking=True)
            view2 = view2.to(self.ctx.device, non_blocking=True)
            lesion = lesion.to(self.ctx.device, non_blocking=True)
            last = micro == o.accum_steps - 1
            sync = self.ddp.no_sync() if self.ctx.world > 1 and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss = self.ddp(view1, view2, lesion)
                (loss / o.accum_steps).backward()
            total += loss.detach().float()
        if o.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad)
        self.optimizer.step()
        mean = total / o.accum_steps
        if self.ctx.world > 1:
            dist.all_reduce(mean, group=self.ctx.group)
            mean /= self.ctx.world
        return float(mean)

    def _loader(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, ...]]:
        workers = self.config.runtime.num_workers
        loader = DataLoader(
            self.dataset,
            batch_sampler=EpochBatches(self.plan, epoch, start_step),
            collate_fn=collate,
            num_workers=workers,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=False,
        )
        return iter(loader)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    def _save_encoder(self) -> Path:
        c = self.config
        if self.ctx.main:
            backbone = self.model.backbone
            if self.ctx.world > 1:
                backbone = plain_batchnorm(backbone)
            digest = save_encoder_checkpoint(
                self.encoder_path,
                arch=c.model.arch,
                arch_kwargs=encoder_arch_kwargs(c),
                state_dict=backbone.state_dict(),
                preprocessing=Preprocessing(
                    image_size=c.model.image_size,
                    input="windowed",
                    channels=c.model.channels,
                    mean=tuple(c.model.mean),
                    std=tuple(c.model.std),
                ),
                config={
                    "pretrainer": "lecl",
                    "mode": c.mode,
                    "steps": self.step,
                    "training_fingerprint": c.training_fingerprint(),
                    "slices": len(self.table),
                    "scans": len(self.table.scan_ids),
                    "training": _plain_config(c),
                },
            )
            plot_loss(self.log_path, self.out / f"{self.stem}-loss.png", self._title())
            print(f"encoder checkpoint {self.encoder_path} (sha256 {digest[:16]}...)", flush=True)
        self._barrier()
        return self.encoder_path

    def _describe(self) -> None:
        c, t = self.config, self.table
        lesion = int(t.is_lesion.sum())
        precision = str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else "fp32"
        print(
            f"LeCL pretraining '{c.experiment}' ({c.mode}): {c.model.arch} at {c.model.image_size} px, "
            f"{len(t)} slices from {len(t.scan_ids)} scans ({lesion} with lesions), sampling {c.sampling}, "
            f"loss {c.loss.name} (lambda {c.loss.sample_weight:g}, tau {c.loss.temperature:g}); "
            f"{self.ctx.world} process(es) on {self.ctx.device}, {precision}, global batch "
            f"{c.optim.batch_size}, {self.steps_per_epoch} steps/epoch x {c.optim.epochs} epochs, "
            f"peak lr {self.peak_lr:.3g}; output {self.out}",
            flush=True,
        )
        for failure in t.failures:
            print(f"warning: skipped scan {failure}", flush=True)

    def _progress_bar(self, stop_at: int) -> Any:
        if not (self.ctx.main and self.config.runtime.progress):
            return None
        from tqdm import tqdm

        return tqdm(
            total=stop_at,
            initial=self.step,
            desc=f"pretrain {self.config.experiment}",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def _title(self) -> str:
        c = self.config
        return f"{c.model.arch} {c.mode} '{c.experiment}' (batch {c.optim.batch_size}, {self.ctx.world} proc)"

    def _barrier(self) -> None:
        if self.ctx.world > 1:
            dist.barrier(group=self.ctx.group)


def _no_buffer_broadcast() -> dict[str, bool]:
    """DDP keyword that skips the per-forward buffer broadcast (the heads' statistics are already global)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return {key: False}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and tensor bytes: ranks in sync have equal digests."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(key.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast as the core resolves ``optim.precision`` for extraction (``auto``: bf16 on GPUs and
    CPUs that compute it natively), or ``None`` for fp32; bf16 asked of a GPU without it is an error."""
    if resolve_precision(precision, device) == "fp32":
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("optim.precision: bf16 is not supported by this GPU; use fp32")
    return torch.bfloat16


def _plain_config(config: PretrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    values.pop("path", None)
    values["runtime"] = {k: v for k, v in values["runtime"].items() if k in ("device",)}
    values["plugins"] = [Path(p).name for p in values["plugins"]]
    return values


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The key paths whose values differ (a list and a tuple of the same items are equal)."""
    keys: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, path + ".")
        elif a != b and not (
            isinstance(a, list | tuple) and isinstance(b, list | tuple) and list(a) == list(b)
        ):
            keys.append(path)
    return keys
