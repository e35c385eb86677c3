"""The pretraining engine: one loop for DAGMaN and every baseline of the method registry (DESIGN 3.4-3.6, 6).

``pretrain(method, cache_dirs, out_dir, settings)`` trains a student network against its EMA teacher on two
random crops per CT volume and writes, in ``out_dir``:

- ``settings.json``: resolved settings, method spec, run geometry and code version (written at start);
- ``metrics.partial.csv``: the running log, one row per step (schedules, losses, teacher entropies and ln K,
  throughput, data wait); a resumed run keeps its rows before the resume step. It is no workflow output, so it
  survives the clean-up Snakemake does after an interrupted (failed) job;
- ``metrics.csv``: the same rows, every step from 0, published atomically when the run ends (so in the
  workflow, which removes a job's outputs before it runs, it exists only for a run that has ended);
- ``checkpoint.pt``: everything needed to resume exactly (every ``checkpoint_every`` steps, at the end, and
  on SIGTERM/SIGUSR1); rerunning the same command in the same folder resumes;
- ``encoder.pt``, ``encoder_sa.pt``, ``encoder_config.json``: the teacher's encoder (DINO/iBOT evaluate the
  EMA teacher) exported for ``SwinUNETR(...).swinViT`` with ``strict=True``;
- ``summary.json``: final step, final losses, wall time, and the largest centre difference between ranks.

A checkpoint of other settings is refused. With ``restart_stale`` (``--restart-stale``, what the workflow
passes: Snakemake reruns a pretraining only when its settings changed or the user forced it), such a
checkpoint, or one already at the command's last step, is moved with the rest of its run's files into
``stale-<n>/`` and training starts from step 0.

Randomness: every step reseeds torch from (seed, step, rank) and draws masks and patch dropout from a
generator seeded the same way, and the crops depend on (seed, data pass, index) only, so a resumed run
repeats the uninterrupted one bit for bit on the same hardware.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from dagman.io.atomic import atomic_path, write_json_atomic, write_rows_atomic
from dagman.io.crops import TwoCropDataset
from dagman.models.network import DagmanNetwork, NetworkOutput
from dagman.models.weights import export_encoder
from dagman.ssl.checkpoint import (
    code_version,
    get_rng_state,
    load_checkpoint,
    move_aside,
    resume_conflicts,
    save_checkpoint,
    set_rng_state,
)
from dagman.ssl.distributed import (
    DistContext,
    all_gather,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from dagman.ssl.ema import ema_update, make_teacher
from dagman.ssl.losses import PatchDistillationLoss, TokenDistillationLoss, amip_loss, total_loss
from dagman.ssl.masking import make_mask, mask_to_grid, resample_scores, upsample_mask
from dagman.ssl.methods import MethodSpec, get_method
from dagman.ssl.noise import patch_dropout_mask
from dagman.ssl.schedules import TrainingSchedules, build_training_schedules
from dagman.ssl.settings import RUNTIME_KEYS, PretrainSettings

__all__ = [
    "CHECKPOINT_NAME",
    "EXIT_INTERRUPTED",
    "METRICS_NAME",
    "METRICS_PARTIAL_NAME",
    "RUN_FILES",
    "StepInfo",
    "TrainingInterrupted",
    "build_student",
    "param_groups",
    "pretrain",
    "step_seed",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.csv"
METRICS_PARTIAL_NAME = "metrics.partial.csv"
#: Everything a run writes in its folder: what ``restart_stale`` moves aside together, so that the folder never
#: mixes two runs' files (say an old encoder.pt beside a new, interrupted checkpoint).
RUN_FILES = (
    CHECKPOINT_NAME,
    METRICS_PARTIAL_NAME,
    METRICS_NAME,
    "settings.json",
    "summary.json",
    "encoder.pt",
    "encoder_sa.pt",
    "encoder_config.json",
    "tensorboard",
)
#: Exit status of ``dagman pretrain`` after SIGTERM/SIGUSR1: checkpoint written, rerun to resume.
EXIT_INTERRUPTED = 3
_DISTILLATION = ("ampd", "aitd", "gitd")
# Parameters exempt from weight decay besides biases and norms (DINO, Swin): tokens, position tables.
_NO_DECAY_KEYS = ("token", "pos_embed", "relative_position_bias_table")


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGUSR1 arrived; the checkpoint after ``step`` is written and a rerun resumes there."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(
            f"interrupted at step {step}; rerun the same command to resume (checkpoint {checkpoint})"
        )
        self.step, self.checkpoint = step, checkpoint


@dataclass
class StepInfo:
    """What ``pretrain``'s ``on_step`` callback sees after each step (tests and monitoring).

    Attributes:
        step: number of completed global steps.
        metrics: the step's metrics row.
        student: the student network (unwrapped from DDP).
        teacher: the EMA teacher.
    """

    step: int
    metrics: dict[str, float]
    student: nn.Module
    teacher: nn.Module


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A 63-bit seed from (seed, global step, rank, stream): independent streams, same on every rerun."""
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def build_student(spec: MethodSpec, settings: PretrainSettings) -> DagmanNetwork:
    """The student network of a method: backbone sizes from ``settings``, SA and losses from ``spec``.

    On the Swin the AMPD tokens and the student mask live on stage 3 whatever the SA stage, so SA at another
    stage gets its own patch head (the [CLS] and the stage-3 tokens differ in width).
    """
    common: dict[str, Any] = dict(
        img_size=settings.crop_size,
        sa_depth=settings.sa_depth,
        out_dim=settings.out_dim,
        head_hidden_dim=settings.head_hidden_dim,
        head_bottleneck_dim=settings.head_bottleneck_dim,
        head_nlayers=settings.head_nlayers,
        norm_last_layer=settings.norm_last_layer,
        recon_head="amip" in spec.enabled_losses,
    )
    if spec.backbone == "vit":
        kwargs = dict(
            patch_size=settings.vit_patch_size,
            embed_dim=settings.vit_embed_dim,
            depth=settings.vit_depth,
            num_heads=settings.vit_num_heads,
            mlp_ratio=settings.mlp_ratio,
            drop_path_rate=settings.drop_path,
            use_checkpoint=settings.use_checkpoint,
        )
        return DagmanNetwork("vit", sa_stage=None, backbone_kwargs=kwargs, **common)
    token_stage = min(3, len(settings.depths))
    sa_stage = spec.sa_stage if spec.sa else None
    kwargs = dict(
        embed_dim=settings.embed_dim,
        depths=settings.depths,
        num_heads=settings.num_heads,
        patch_size=settings.patch_size,
        window_size=settings.window_size,
        mlp_ratio=settings.mlp_ratio,
        drop_path_rate=settings.drop_path,
        use_checkpoint=settings.use_checkpoint,
    )
    return DagmanNetwork(
        "swin",
        sa_stage=sa_stage,
        token_stage=token_stage,
        share_patch_head=sa_stage in (None, token_stage),
        backbone_kwargs=kwargs,
        **common,
    )


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: weights decay; biases, norms, tokens and position embeddings/tables do not.

    Each group carries ``decay`` so the loop can apply the weight-decay schedule to the first group only.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in _NO_DECAY_KEYS)
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False, "weight_decay": 0.0}]


class _ResumableSampler(Sampler[int]):
    """A ``DistributedSampler`` whose first ``start`` indices of the pass can be skipped (exact resume)."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base, self.start = base, 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.start :])

    def __len__(self) -> int:
        return len(self.base) - self.start


@dataclass
class _Data:
    """The training data: one pass = every cached volume once (per process share), shuffled per pass."""

    loader: DataLoader
    sampler: _ResumableSampler
    datasets: list[TwoCropDataset]
    batches_per_pass: int
    n_volumes: int

    def start_pass(self, index: int, skip_batches: int) -> None:
        """Select pass ``index``'s order and crops and skip its first ``skip_batches`` batches."""
        self.sampler.base.set_epoch(index)
        for dataset in self.datasets:
            dataset.set_epoch(index)
        self.sampler.start = skip_batches * self.loader.batch_size


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers ignore SIGTERM/SIGUSR1 (SLURM signals every process of the job): the main process
    finishes its step, writes the checkpoint and then shuts the workers down itself."""
    for sig in _StopSignals.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def build_data(cache_dirs: Sequence[Path], settings: PretrainSettings, ctx: DistContext) -> _Data:
    """Two-crop datasets over every cache's index.csv, a seeded (distributed) sampler and the loader."""
    if not cache_dirs:
        raise ValueError("no cache folder given: pass at least one folder written by `dagman resample`")
    datasets = []
    for k, folder in enumerate(cache_dirs):
        index = Path(folder) / "index.csv"
        if not index.is_file():
            raise FileNotFoundError(f"cache folder {folder} has no index.csv (run `dagman resample` first)")
        datasets.append(TwoCropDataset(index, settings.crop_size, seed=settings.seed + k))
    dataset = ConcatDataset(datasets)
    base = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=settings.seed, drop_last=True
    )
    batches = len(base) // settings.batch_size
    if batches < 1:
        raise ValueError(
            f"the cache holds {len(dataset)} volumes, fewer than batch_size x processes = "
            f"{settings.batch_size} x {ctx.world_size}; lower batch_size or add data"
        )
    sampler = _ResumableSampler(base)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=settings.num_workers,
        pin_memory=ctx.device.type == "cuda",
        drop_last=True,
        persistent_workers=settings.num_workers > 0,
        worker_init_fn=_ignore_stop_signals,
        # its own generator, so creating an iterator never draws from the global torch RNG
        generator=torch.Generator().manual_seed(settings.seed),
    )
    return _Data(loader, sampler, datasets, batches, len(dataset))


@dataclass
class _Run:
    """Everything one training step needs."""

    spec: MethodSpec
    settings: PretrainSettings
    ctx: DistContext
    student: nn.Module  # DDP-wrapped when distributed
    teacher: DagmanNetwork
    losses: nn.ModuleDict
    optimizer: torch.optim.Optimizer
    schedules: TrainingSchedules
    bf16: bool
    token_grid: tuple[int, int, int]
    sa_grid: tuple[int, int, int] | None
    n_patches: int
    voxels_per_cell: int

    @property
    def enabled(self) -> tuple[str, ...]:
        return self.spec.enabled_losses

    @property
    def distill(self) -> tuple[str, ...]:
        return tuple(k for k in self.enabled if k in _DISTILLATION)

    @property
    def needs_teacher(self) -> bool:
        return bool(self.distill) or self.spec.needs_teacher_attention

    @property
    def metric_names(self) -> list[str]:
        """Names of the values ``_train_step`` reduces over processes, in order."""
        return ["loss", *self.enabled, *(f"{k}_entropy" for k in self.distill)]


def _train_step(run: _Run, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
    """One optimisation step at global step ``step`` (DESIGN 3.4, 3.5); returns the step's metrics."""
    spec, ctx = run.spec, run.ctx
    sched = run.schedules.at(step)
    for group in run.optimizer.param_groups:
        group["lr"] = sched.lr
        group["weight_decay"] = sched.weight_decay if group["decay"] else 0.0
    # All randomness of the step (drop path, masks, patch dropout) derives from (seed, step, rank).
    torch.manual_seed(step_seed(run.settings.seed, step, ctx.rank, 0))
    gen = torch.Generator().manual_seed(step_seed(run.settings.seed, step, ctx.rank, 1))
    # Views u and v pass through each network as one batch [u; v] (no batch norm, so same as two passes).
    x = torch.cat([batch["u"], batch["v"]]).to(ctx.device, non_blocking=True)
    n = x.shape[0]
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        t_out = None
        if run.needs_teacher:
            drop = (
                patch_dropout_mask(n, run.n_patches, spec.pdr, gen, ctx.device)
                if spec.noisy_teacher
                else None
            )
            with torch.no_grad():
                t_out = run.teacher(x, drop=drop, project=bool(run.distill), reconstruct=False)
        mask = _student_mask(run, t_out, n, gen)
        s_out = run.student(x, mask=mask, project=bool(run.distill), reconstruct="amip" in run.enabled)
        parts, entropies = _losses(run, s_out, t_out, x, mask, sched.teacher_temp)
        loss = total_loss(parts, spec.losses)
    logged = [loss.detach(), *(parts[k].detach() for k in run.enabled), *(entropies[k] for k in run.distill)]
    values = (all_reduce_sum(torch.stack(logged).float(), ctx) / ctx.world_size).tolist()
    metrics = dict(zip(run.metric_names, values, strict=True))
    if not all(math.isfinite(v) for v in values):
        raise FloatingPointError(f"non-finite loss at step {step}: {metrics}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.settings.clip_grad > 0:
        params = [p for g in run.optimizer.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, run.settings.clip_grad)
    run.optimizer.step()
    ema_update(run.teacher, run.student, sched.momentum)
    return {**sched._asdict(), **metrics}


def _student_mask(run: _Run, t_out: NetworkOutput | None, n: int, gen: torch.Generator) -> torch.Tensor:
    """The student's (n, N) mask on the token grid: from the teacher's SATT on its noisy view, or random."""
    spec = run.spec
    if spec.needs_teacher_attention:
        scores = t_out.satt.float()
        if run.sa_grid != run.token_grid:
            scores = resample_scores(scores, run.sa_grid, run.token_grid)
        return make_mask(
            spec.masking,
            run.token_grid,
            spec.mask_ratio,
            scores=scores,
            hint_ratio=spec.hint_ratio,
            generator=gen,
        )
    return make_mask(
        spec.masking,
        run.token_grid,
        spec.mask_ratio,
        batch_size=n,
        hint_ratio=spec.hint_ratio,
        generator=gen,
        device=run.ctx.device,
    )


def _losses(
    run: _Run,
    s_out: NetworkOutput,
    t_out: NetworkOutput | None,
    x: torch.Tensor,
    mask: torch.Tensor,
    temp: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The enabled losses (and teacher entropies); outputs are split back into the views [u; v]."""
    parts, entropies = {}, {}
    for name, attr in (("aitd", "cls_logits"), ("gitd", "global_logits")):
        if name in run.enabled:  # cross-view: teacher v^ vs student u~ and teacher u^ vs student v~
            s_views, t_views = getattr(s_out, attr).chunk(2), getattr(t_out, attr).chunk(2)
            parts[name], entropies[name] = run.losses[name](list(s_views), list(t_views), temp)
    if "ampd" in run.enabled:  # same view, masked cells only
        s_views, t_views = s_out.patch_logits.chunk(2), t_out.patch_logits.chunk(2)
        parts["ampd"], entropies["ampd"] = run.losses["ampd"](
            list(s_views), list(t_views), list(mask.chunk(2)), temp
        )
    if "amip" in run.enabled:
        voxels = upsample_mask(mask_to_grid(mask, run.token_grid), run.voxels_per_cell)
        parts["amip"] = amip_loss(s_out.recon, x, voxels)
    return parts, entropies


class _StopSignals:
    """SIGTERM/SIGUSR1 only set a flag; the loop checkpoints after the current step and stops."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, ctx: DistContext) -> bool:
        """Whether any process got a stop signal (all ranks agree, so all stop after the same step)."""
        flag = torch.tensor([float(self.flag)], device=ctx.device)
        return bool(all_reduce_sum(flag, ctx).item() > 0)


class _MetricsLog:
    """The per-step metrics (and optional TensorBoard scalars) of the main process.

    Rows are appended to metrics.partial.csv as steps finish; on resume at ``start`` its rows of steps before
    ``start`` are kept and later ones (trained after the last checkpoint) dropped. :meth:`publish` copies it to
    metrics.csv when the run ends.
    """

    def __init__(
        self, out_dir: Path, columns: list[str], start: int, active: bool, tensorboard: bool
    ) -> None:
        self.partial, self.path = out_dir / METRICS_PARTIAL_NAME, out_dir / METRICS_NAME
        self.columns, self.active = columns, active
        self.last: dict[str, float] = {}
        self._file = self._writer = self._tb = None
        if not active:
            return
        # metrics.csv: a run of an older version kept its only log there
        kept = max((_rows_before(p, start) for p in (self.partial, self.path)), key=len)
        if len(kept) < start:
            log.warning(
                "%s lacks the metrics of steps %d-%d (removed, cut short, or written by an older version): "
                "metrics.csv will miss them",
                self.partial,
                len(kept),
                start - 1,
            )
        if kept:
            self.last = {k: float(v) for k, v in kept[-1].items() if v not in ("", None)}
        # \r\n: csv's default, which the appending writer below uses too
        write_rows_atomic(self.partial, columns, kept, extrasaction="ignore", lineterminator="\r\n")
        self._file = self.partial.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start)
            except ImportError:
                log.info("TensorBoard scalars skipped: install with `pip install 'dagman[tensorboard]'`")

    def write(self, row: dict[str, float]) -> None:
        self.last = row
        if not self.active:
            return
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for key in self.columns[2:]:
                self._tb.add_scalar(key, row[key], int(row["step"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def publish(self) -> None:
        """Copy the closed running log to metrics.csv atomically (the run has ended)."""
        if self.active:
            with atomic_path(self.path) as tmp:
                shutil.copyfile(self.partial, tmp)


def _rows_before(path: Path, start: int) -> list[dict[str, str]]:
    """The rows of steps 0, 1, ..., start - 1 in a metrics CSV, up to the first missing, repeated or incomplete
    row (a row cut short by a killed job); none when the file does not exist."""
    if start <= 0 or not path.is_file():
        return []
    kept: list[dict[str, str]] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if len(kept) == start or None in row or None in row.values():
                break
            try:
                step = int(row["step"])
            except (KeyError, ValueError):
                break
            if step != len(kept):
                break
            kept.append(row)
    return kept


def _open_checkpoint(
    out_dir: Path,
    spec: MethodSpec,
    settings: PretrainSettings,
    ctx: DistContext,
    stop_at: int,
    restart_stale: bool,
) -> dict[str, Any] | None:
    """The checkpoint in ``out_dir`` to resume from, or None to train from step 0.

    A checkpoint of another method, settings or process count is refused, or with ``restart_stale`` moved
    aside with the rest of its run; so is one already at ``stop_at`` (nothing left to train) with
    ``restart_stale``, while without it that one is "resumed" (the outputs are exported again).
    """
    path = out_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, map_location=ctx.device)
    conflicts = resume_conflicts(
        ckpt,
        method=spec.to_dict(),
        settings=settings.to_dict(),
        world_size=ctx.world_size,
        runtime_keys=RUNTIME_KEYS,
    )
    step = int(ckpt["step"])
    if conflicts:
        reason = "written by a different pretraining configuration: " + "; ".join(conflicts)
    elif step >= stop_at:
        reason = f"already at step {step} (this command stops at step {stop_at}: nothing left to train)"
    else:
        return ckpt
    if not restart_stale:
        if conflicts:
            raise ValueError(
                f"checkpoint {path} was {reason}. Refusing to mix them: use a new output folder, rerun with the "
                "checkpoint's settings to resume, or pass --restart-stale (restart_stale=True) to move that "
                f"run's files into {out_dir}/stale-<n>/ and train from step 0"
            )
        if ctx.is_main:
            log.info("checkpoint %s is %s; pass --restart-stale to train again from step 0", path, reason)
        return ckpt
    barrier(ctx)  # every process has read the checkpoint before the main one moves it
    if ctx.is_main:
        dest = move_aside(out_dir, RUN_FILES)
        log.warning(
            "checkpoint %s is stale, %s. Moved the previous run's files (%s) to %s (delete it when no longer "
            "needed); training %s from step 0",
            path,
            reason,
            ", ".join(sorted(p.name for p in dest.iterdir())),
            dest,
            spec.name,
        )
    barrier(ctx)
    return None


def pretrain(
    method: str,
    cache_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: PretrainSettings,
    *,
    on_step: Callable[[StepInfo], None] | None = None,
    restart_stale: bool = False,
) -> dict[str, Any]:
    """Pretrain one method of the registry, resuming from ``out_dir/checkpoint.pt`` when it exists.

    Under torchrun (RANK/WORLD_SIZE in the environment) the processes train together with DDP (NCCL on GPU,
    gloo on CPU); only rank 0 writes files.

    Args:
        method: a name of ``dagman.ssl.methods.list_methods()``; ``settings.method_overrides`` apply to it.
        cache_dirs: training caches (folders with index.csv); their volumes are concatenated.
        out_dir: the run's folder (``results/<run>/pretrain/<method>/`` in the workflow).
        settings: hyper-parameters.
        on_step: called after every step with a :class:`StepInfo`.
        restart_stale: a checkpoint of other settings, method or process count, or one already at the last
            step, is moved with its run's other files into ``out_dir/stale-<n>/`` and training starts from
            step 0 (instead of refusing the first and re-exporting the second).

    Returns:
        The summary also written to ``summary.json``.

    Raises:
        TrainingInterrupted: SIGTERM/SIGUSR1 arrived; a checkpoint was written (the CLI exits with status 3).
        FloatingPointError: a loss became NaN or infinite; the last good checkpoint is kept.
        ValueError: a checkpoint in ``out_dir`` belongs to other settings (differing keys named; not with
            ``restart_stale``), or bad input.
    """
    spec = get_method(method, **settings.method_overrides)
    ctx = setup_distributed(settings.device)
    try:
        return _pretrain(
            spec, [Path(c) for c in cache_dirs], Path(out_dir), settings, ctx, on_step, restart_stale
        )
    finally:
        cleanup_distributed(ctx)


def _pretrain(
    spec: MethodSpec,
    cache_dirs: list[Path],
    out_dir: Path,
    settings: PretrainSettings,
    ctx: DistContext,
    on_step: Callable[[StepInfo], None] | None,
    restart_stale: bool,
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = build_data(cache_dirs, settings, ctx)
    steps_per_epoch = settings.steps_per_epoch or data.batches_per_pass
    schedules = build_training_schedules(
        epochs=settings.epochs,
        iters_per_epoch=steps_per_epoch,
        warmup_epochs=settings.warmup_epochs,
        lr=settings.lr,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        weight_decay_end=settings.weight_decay_end,
        momentum_base=settings.momentum_base,
        momentum_final=settings.momentum_final,
        teacher_temp_start=settings.teacher_temp_start,
        teacher_temp=settings.teacher_temp,
        teacher_temp_warmup_epochs=settings.teacher_temp_warmup_epochs,
    )
    total = schedules.total_iters
    stop_at = min(total, settings.max_steps or total)
    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and ctx.device.type == "cuda")
    version = code_version()

    torch.manual_seed(settings.seed)  # identical initialisation on every rank
    student = build_student(spec, settings).to(ctx.device)
    teacher = make_teacher(student)
    losses = nn.ModuleDict(
        {
            k: (PatchDistillationLoss if k == "ampd" else TokenDistillationLoss)(
                settings.out_dim, settings.student_temp, settings.center_momentum
            )
            for k in spec.enabled_losses
            if k in _DISTILLATION
        }
    ).to(ctx.device)
    optimizer = torch.optim.AdamW(param_groups(student), lr=0.0)
    ckpt_path = out_dir / CHECKPOINT_NAME
    start, train_time = 0, 0.0
    ckpt = _open_checkpoint(out_dir, spec, settings, ctx, stop_at, restart_stale)
    if ckpt is not None:
        student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        losses.load_state_dict(ckpt["losses"])
        set_rng_state(ckpt["rng"])
        start, train_time = int(ckpt["step"]), float(ckpt["train_time_s"])
        if ctx.is_main:
            log.info("resuming %s from %s at step %d of %d", spec.name, ckpt_path, start, total)

    token_grid, sa_grid, n_patches, voxels_per_cell = _geometry(student, settings.crop_size)
    model: nn.Module = student
    if ctx.distributed:
        # Heads of switched-off losses get no gradient; DDP must be told, or it waits for them forever.
        unused = set(spec.enabled_losses) != {"amip", "ampd", "aitd", "gitd"}
        model = DistributedDataParallel(
            student,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    run = _Run(
        spec,
        settings,
        ctx,
        model,
        teacher,
        losses,
        optimizer,
        schedules,
        bf16,
        token_grid,
        sa_grid,
        n_patches,
        voxels_per_cell,
    )

    resolved = {
        "method": spec.to_dict(),
        "settings": settings.to_dict(),
        "runtime": {
            "device": str(ctx.device),
            "precision": "bf16" if bf16 else "fp32",
            "world_size": ctx.world_size,
            "global_batch": settings.batch_size * ctx.world_size,
            "n_volumes": data.n_volumes,
            "batches_per_pass": data.batches_per_pass,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total,
            "stop_at_step": stop_at,
            "cache_dirs": [str(c) for c in cache_dirs],
        },
        "version": version,
    }
    if ctx.is_main:
        write_json_atomic(out_dir / "settings.json", resolved)
        log.info("pretraining %s with resolved settings:\n%s", spec.name, json.dumps(resolved, indent=2))

    def save(step: int) -> None:
        if ctx.is_main:
            save_checkpoint(
                {
                    "step": step,
                    "epoch": step // steps_per_epoch,
                    "student": student.state_dict(),
                    "teacher": teacher.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "losses": losses.state_dict(),
                    "scaler": None,  # bf16 needs no gradient scaler
                    "settings": settings.to_dict(),
                    "method": spec.to_dict(),
                    "network": student.config(),
                    "world_size": ctx.world_size,
                    "version": version,
                    "rng": get_rng_state(),
                    "train_time_s": train_time,
                },
                ckpt_path,
            )
        barrier(ctx)

    columns = [
        "step",
        "epoch",
        "lr",
        "weight_decay",
        "momentum",
        "teacher_temp",
        *run.metric_names,
        "ln_k",
        "samples_per_s",
        "data_wait_s",
    ]
    metrics = _MetricsLog(out_dir, columns, start, ctx.is_main, settings.tensorboard)
    global_batch = settings.batch_size * ctx.world_size
    step, saved_step = start, start

    with (
        _StopSignals() as stop,
        tqdm(
            total=stop_at,
            initial=start,
            desc=f"pretrain {spec.name}",
            disable=not ctx.is_main,
            dynamic_ncols=True,
        ) as bar,
    ):
        try:
            while step < stop_at:
                data.start_pass(*divmod(step, data.batches_per_pass))
                batches = iter(data.loader)
                while step < stop_at:
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    if batch is None:  # the pass is over
                        break
                    t1 = time.perf_counter()
                    try:
                        row = _train_step(run, batch, step)
                    except FloatingPointError as err:
                        last = (
                            f"{ckpt_path} (step {saved_step})" if ckpt_path.exists() else "none written yet"
                        )
                        raise FloatingPointError(
                            f"{err}. Stopping; the last good checkpoint is kept: {last}. Lower lr or check the "
                            "cache for NaNs, then rerun to resume."
                        ) from None
                    t2 = time.perf_counter()
                    train_time += t2 - t0
                    row.update(
                        step=step,
                        epoch=step // steps_per_epoch,
                        ln_k=math.log(settings.out_dim),
                        samples_per_s=global_batch / max(t2 - t1, 1e-9),
                        data_wait_s=t1 - t0,
                    )
                    step += 1
                    metrics.write(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if on_step is not None:
                        on_step(StepInfo(step, row, student, teacher))
                    interrupted = stop.requested(ctx)
                    if interrupted or step % settings.checkpoint_every == 0 or step == stop_at:
                        save(step)
                        saved_step = step
                    if interrupted:
                        raise TrainingInterrupted(step, ckpt_path)
        finally:
            metrics.close()

    if ctx.is_main:
        metrics.publish()
        export_encoder(teacher, out_dir / "encoder.pt", input_size=settings.crop_size)
    centre_diff = 0.0
    for module in losses.values():
        gathered = all_gather(module.center, ctx)
        centre_diff = max(centre_diff, max(float((g - gathered[0]).abs().max()) for g in gathered))
    summary = {
        "method": spec.name,
        "final_step": step,
        "total_steps": total,
        "completed": step >= total,
        "epoch": step // steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "precision": "bf16" if bf16 else "fp32",
        "final_losses": {k: metrics.last[k] for k in run.metric_names if k in metrics.last},
        "ln_k": math.log(settings.out_dim),
        "center_max_rank_diff": centre_diff,
        "train_time_s": train_time,
        "wall_time_s": time.perf_counter() - wall_start,
        "encoder": "encoder.pt",
    }
    if ctx.is_main:
        write_json_atomic(out_dir / "summary.json", summary)
    barrier(ctx)
    return summary


def _geometry(
    network: DagmanNetwork, crop: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int] | None, int, int]:
    """Token grid of the masks, SATT grid, patch tokens per crop (for patch dropout) and voxels per token cell."""
    if network.backbone_name == "vit":
        grid = network.backbone.grid(crop)
        return grid, grid, math.prod(grid), network.backbone.patch_size
    backbone = network.backbone
    token_grid = network.token_grid(crop)
    sa_grid = backbone.grid(crop, network.sa_stage) if network.sa_stage else None
    return (
        token_grid,
        sa_grid,
        math.prod(backbone.grid(crop, 0)),
        backbone.stage_strides[network.token_stage - 1],
    )
