"""Attention-head diversity of the Swin stages (DESIGN 4; EXPERIMENTS D6; MIDL Fig. 4a).

For every Swin block and head, over a fixed evaluation set:

- mean attention distance: for each query, the attention-weighted mean Euclidean distance to the keys of its
  window, sum_j p_ij * ||x_i - x_j||, with token positions in input voxels (a stage-s token spans
  ``patch * 2**(s-1)`` voxels) and in mm (times the cache spacing); averaged over queries, windows and images;
- attention entropy: for each query, -sum_j p_ij ln p_ij (nats; ln n for uniform attention over n keys, 0 for
  one-hot); averaged the same way.

Attention weights are MONAI's own: a forward hook on each ``WindowAttention.softmax`` sees the (windows, heads,
n, n) probabilities, shifted-window masks included (masked pairs get ~0 weight, so windows that wrap around
the volume do not count cross-region distances), and reduces them at once so no attention matrix is kept.
Window token positions follow MONAI's ``window_partition`` (C order over the window's (d, h, w)); the window
used is MONAI's ``get_window_size`` of the stage grid (smaller than the configured window on small grids).
Grids not divisible by the window are zero-padded by MONAI and the padded tokens count as keys; the
evaluation crops are the pretraining crop size, where grids divide evenly.

Evaluation set: a deterministic centred crop (the pretraining crop size, zero-padded where the volume is
smaller) of each volume in a training cache's index.csv, in (case_id, series_id) order.

The per-stage summary is the mean and the variance (population, ddof=0: the heads are the whole set) across
all heads of all blocks of the stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.networks.nets.swin_unetr import get_window_size
from tqdm import tqdm

from dagman.io.atomic import write_csv_atomic

__all__ = [
    "DIVERSITY_COLUMNS",
    "SUMMARY_COLUMNS",
    "window_positions",
    "window_distances",
    "attention_entropy",
    "attention_distance",
    "HeadStatistics",
    "record_swin_attention",
    "centred_crop",
    "evaluation_crops",
    "summarise_heads",
    "run_diversity",
]

DIVERSITY_COLUMNS: tuple[str, ...] = (
    "method",
    "stage",
    "block",
    "head",
    "mean_distance",
    "mean_distance_mm",
    "entropy",
    "n_queries",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "stage",
    "n_heads",
    "entropy_mean",
    "entropy_var",
    "distance_mean",
    "distance_var",
    "distance_mm_mean",
    "distance_mm_var",
)


def window_positions(window: Sequence[int]) -> np.ndarray:
    """(n, 3) integer (d, h, w) positions of a window's tokens in MONAI's flattening order (C order)."""
    grids = np.meshgrid(*(np.arange(int(w)) for w in window), indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def window_distances(window: Sequence[int], step: float = 1.0) -> torch.Tensor:
    """(n, n) Euclidean distances between the tokens of a window, in units of ``step`` per token."""
    pos = torch.from_numpy(window_positions(window)).double()
    return torch.cdist(pos, pos) * float(step)


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Per-head entropy of attention rows, summed over rows and leading dimensions.

    Args:
        attn: (B, heads, n_queries, n_keys) probabilities (rows sum to 1).

    Returns:
        (heads,) float64 sums of -sum_j p ln p over all B * n_queries rows (divide by that count for the mean).
    """
    return torch.special.entr(attn.double()).sum(dim=-1).sum(dim=(0, 2))


def attention_distance(attn: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Per-head attention-weighted query-key distance, summed over rows and leading dimensions.

    Args:
        attn: (B, heads, n, n) probabilities.
        distances: (n, n) query-key distances.

    Returns:
        (heads,) float64 sums of sum_j p_ij d_ij over all B * n rows.
    """
    return (attn.double() * distances.to(attn.device, torch.float64)).sum(dim=-1).sum(dim=(0, 2))


@dataclass
class HeadStatistics:
    """Running per-head sums of one Swin block (stage and block 1-based)."""

    stage: int
    block: int
    heads: int
    step: float
    entropy: torch.Tensor = field(init=False)
    distance: torch.Tensor = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.entropy = torch.zeros(self.heads, dtype=torch.float64)
        self.distance = torch.zeros(self.heads, dtype=torch.float64)

    def add(self, attn: torch.Tensor, window: Sequence[int]) -> None:
        """Accumulate one softmax output (windows, heads, n, n) of this block."""
        n = attn.shape[-1]
        if int(np.prod(window)) != n:
            raise ValueError(
                f"stage {self.stage} block {self.block}: window {tuple(window)} does not hold {n} tokens"
            )
        self.entropy += attention_entropy(attn).cpu()
        self.distance += attention_distance(attn, window_distances(window, self.step)).cpu()
        self.rows += attn.shape[0] * n


@contextmanager
def record_swin_attention(backbone: torch.nn.Module) -> Iterator[list[HeadStatistics]]:
    """Hook every window-attention softmax of a :class:`~dagman.models.swin.SwinBackbone` while inside.

    Yields the list of :class:`HeadStatistics` (one per block, stage order), filled by every forward pass run
    inside the ``with`` block. MONAI's optional fused-attention path (which skips the softmax module) is
    switched off meanwhile and restored after.
    """
    layers = [getattr(backbone.swinViT, f"layers{i}")[0] for i in range(1, backbone.num_stages + 1)]
    stats: list[HeadStatistics] = []
    handles = []
    fused: list[tuple[torch.nn.Module, bool]] = []
    for stage, layer in enumerate(layers, start=1):
        step = float(backbone.stage_strides[stage - 1])
        for number, block in enumerate(layer.blocks, start=1):
            record = HeadStatistics(stage=stage, block=number, heads=block.attn.num_heads, step=step)
            stats.append(record)
            current: dict[str, tuple[int, ...]] = {}

            # default arguments bind this block's record and window holder (late binding in loops)
            def before(module: torch.nn.Module, args: tuple, current: dict = current) -> None:
                _, d, h, w, _ = args[0].shape
                window, _ = get_window_size((d, h, w), module.window_size, module.shift_size)
                current["window"] = tuple(int(v) for v in window)

            def after(
                module: torch.nn.Module,
                args: tuple,
                output: torch.Tensor,
                record: HeadStatistics = record,
                current: dict = current,
            ) -> None:
                record.add(output.detach(), current["window"])

            handles.append(block.register_forward_pre_hook(before))
            handles.append(block.attn.softmax.register_forward_hook(after))
            fused.append((block.attn, bool(getattr(block.attn, "use_flash_attention", False))))
            block.attn.use_flash_attention = False
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in fused:
            module.use_flash_attention = flag


def centred_crop(volume: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The centred ``size`` crop of a (z, y, x) volume as float32, zero-padded (centred) where it is smaller."""
    out = np.zeros(tuple(int(s) for s in size), dtype=np.float32)
    src, dst = [], []
    for n, s in zip(volume.shape, size, strict=True):
        if n >= s:
            start = (n - s) // 2
            src.append(slice(start, start + s))
            dst.append(slice(0, s))
        else:
            start = (s - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def evaluation_crops(
    index_csv: str | os.PathLike[str], size: Sequence[int], max_volumes: int | None = None
) -> tuple[list[str], list[np.ndarray], float]:
    """The fixed evaluation set: centred crops of the cache's volumes in (case_id, series_id) order.

    Returns:
        Keys ``<case_id>__<series_id>``, crops (float32 in [0, 1]) and the cache spacing in mm.
    """
    index_csv = Path(index_csv)
    if not index_csv.is_file():
        raise FileNotFoundError(f"cache index {index_csv} does not exist (run `dagman resample` first)")
    table = pd.read_csv(index_csv, dtype={"case_id": str, "series_id": str, "array": str})
    missing = [c for c in ("case_id", "series_id", "array", "spacing") if c not in table.columns]
    if missing:
        raise ValueError(f"cache index {index_csv} lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise ValueError(f"cache index {index_csv} lists no volume")
    spacings = table["spacing"].astype(float).unique()
    if len(spacings) != 1:
        raise ValueError(f"cache index {index_csv} mixes spacings {sorted(spacings)}")
    table = table.sort_values(["case_id", "series_id"]).reset_index(drop=True)
    if max_volumes is not None:
        table = table.head(int(max_volumes))
    keys, crops = [], []
    for row in table.itertuples(index=False):
        volume = np.load(index_csv.parent / row.array, mmap_mode="r")
        keys.append(f"{row.case_id}__{row.series_id}")
        crops.append(centred_crop(volume, size))
    return keys, crops, float(spacings[0])


def summarise_heads(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, stage): number of heads, mean and population variance across heads (``SUMMARY_COLUMNS``)."""
    grouped = table.groupby(["method", "stage"], sort=True)
    summary = grouped.agg(
        n_heads=("head", "size"),
        entropy_mean=("entropy", "mean"),
        entropy_var=("entropy", lambda s: float(np.var(s, ddof=0))),
        distance_mean=("mean_distance", "mean"),
        distance_var=("mean_distance", lambda s: float(np.var(s, ddof=0))),
        distance_mm_mean=("mean_distance_mm", "mean"),
        distance_mm_var=("mean_distance_mm", lambda s: float(np.var(s, ddof=0))),
    ).reset_index()
    return summary[list(SUMMARY_COLUMNS)]


@torch.no_grad()
def run_diversity(
    encoder_dir: str | os.PathLike[str],
    index_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    method: str | None = None,
    input_size: int | None = None,
    max_volumes: int | None = None,
    batch_size: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attention distance and entropy per Swin stage, block and head of one pretrained encoder.

    Writes ``out_dir/diversity.csv`` (``DIVERSITY_COLUMNS``; distances in input voxels and in mm) and
    ``out_dir/diversity_summary.csv`` (``SUMMARY_COLUMNS``).

    Args:
        encoder_dir: pretrained Swin export folder (the whole network runs, SA included, as it feeds stage 4).
        index_csv: the training cache's index.csv (the evaluation volumes).
        out_dir: output folder.
        method: method name (default: the export folder's name).
        input_size: crop side (default: the pretraining crop recorded in the export).
        max_volumes: use only the first this many volumes.
        batch_size: crops per forward pass.

    Returns:
        The per-head table and the per-stage summary.
    """
    from dagman.tasks.embeddings import load_pretrained_encoder

    encoder = load_pretrained_encoder(encoder_dir, input_size=input_size, method=method)
    if encoder.network.backbone_name != "swin":
        raise ValueError(f"attention-head diversity is measured on Swin stages; {encoder.method!r} is a ViT")
    keys, crops, spacing = evaluation_crops(index_csv, encoder.input_size, max_volumes)
    with record_swin_attention(encoder.network.backbone) as stats:
        for start in tqdm(range(0, len(crops), batch_size), desc=f"diversity {encoder.method}", unit="batch"):
            batch = torch.from_numpy(np.stack(crops[start : start + batch_size])[:, None])
            encoder.forward(batch)
    rows = []
    for record in stats:
        for head in range(record.heads):
            distance = float(record.distance[head] / record.rows)
            rows.append(
                {
                    "method": encoder.method,
                    "stage": record.stage,
                    "block": record.block,
                    "head": head + 1,
                    "mean_distance": distance,
                    "mean_distance_mm": distance * spacing,
                    "entropy": float(record.entropy[head] / record.rows),
                    "n_queries": record.rows,
                }
            )
    table = pd.DataFrame(rows, columns=list(DIVERSITY_COLUMNS))
    summary = summarise_heads(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out / "diversity.csv", table)
    write_csv_atomic(out / "diversity_summary.csv", summary)
    return table, summary
