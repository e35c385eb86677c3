"""Attention maps of a pretrained encoder on a whole CT (DESIGN 4; EXPERIMENTS D12), aligned with the CT.

How a map is made:
1. the CT is resampled to the pretraining spacing (identity direction, :func:`~dagman.io.resample.resample_to_spacing`)
   and windowed to [0, 1] as the training cache is;
2. the encoder runs on windows of its training crop size (sliding, with overlap, covering the whole volume; or
   one window around a given centre); outside the volume the window is padded with 0, as training crops are;
3. each window's SATT (the SA [CLS]-to-patch attention, ViT [CLS] for ViT encoders) is multiplied by its number
   of tokens, so 1 means "uniform attention" and windows are comparable, then upsampled trilinearly from the
   token grid to the window's voxels; overlapping windows are averaged;
4. the map is resampled onto the CT's own grid (SimpleITK, the CT as reference image), so the NIfTI overlay
   has exactly the CT's size, spacing, origin and direction and opens over it in 3D Slicer or ITK-SNAP.

PNG overlays show the central axial, coronal and sagittal slices in LPS display (patient's right on the
image's left, superior up), with the voxel aspect ratio of the CT; the colour scale runs from the 1st to the
99.5th percentile of the attention over the volume.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from dagman.io.atomic import atomic_path, write_image_atomic
from dagman.io.resample import resample_to_spacing, window_to_unit
from dagman.tasks.embeddings import PretrainedEncoder

__all__ = [
    "AttentionVolume",
    "read_ct",
    "prepare_ct",
    "sliding_starts",
    "attention_volume",
    "to_reference_grid",
    "write_overlay_pngs",
    "write_image",
    "run_attention_map",
    "DISPLAY_WINDOW",
]

#: HU range of the grey CT under the PNG overlays (lung and soft tissue both visible).
DISPLAY_WINDOW: tuple[float, float] = (-1000.0, 400.0)


@dataclass
class AttentionVolume:
    """An attention map on the working (resampled) grid.

    Attributes:
        values: (z, y, x) float32, attention relative to uniform (1 = uniform), 0 where not covered.
        covered: (z, y, x) bool, voxels some window covered.
        image: ``values`` as a SimpleITK image with the working grid's geometry.
    """

    values: np.ndarray
    covered: np.ndarray
    image: sitk.Image


def read_ct(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a CT from one image file (NIfTI, NRRD, MHA...) or a folder holding one DICOM series."""
    path = Path(path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if len(series) != 1:
            raise ValueError(
                f"{path} holds {len(series)} DICOM series; give a folder with exactly one (or a converted NIfTI)"
            )
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        return reader.Execute()
    if not path.is_file():
        raise FileNotFoundError(f"CT image not found: {path}")
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path} is not a 3D scalar image (dimension {image.GetDimension()})")
    return image


def prepare_ct(
    image: sitk.Image, spacing: float = 2.0, window: Sequence[float] = (-175.0, 250.0)
) -> tuple[sitk.Image, np.ndarray]:
    """Resample a CT to ``spacing`` mm (identity direction) and window it to [0, 1], as the training cache does.

    Returns:
        The resampled image (HU) and its (z, y, x) float32 array in [0, 1].
    """
    work = resample_to_spacing(image, spacing, "linear")
    volume = window_to_unit(sitk.GetArrayViewFromImage(work), float(window[0]), float(window[1]))
    return work, volume.astype(np.float32)


def sliding_starts(size: int, window: int, overlap: float = 0.5) -> list[int]:
    """Window starts along one axis covering ``size`` voxels with windows of ``window`` and the given overlap.

    The first window starts at 0 and the last ends at ``size``; between them the stride is at most
    ``window * (1 - overlap)``. An axis shorter than the window gets one window centred on it (negative start;
    the part outside the volume is padded).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if size <= window:
        return [-((window - size) // 2)]
    stride = max(1, int(window * (1.0 - overlap)))
    count = math.ceil((size - window) / stride) + 1
    return sorted({int(round(s)) for s in np.linspace(0, size - window, count)})


def _crop(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, tuple, tuple]:
    """A zero-padded ``size`` crop of ``volume`` at ``start`` (may lie partly outside), with the slices used."""
    out = np.zeros(tuple(size), dtype=np.float32)
    src, dst = [], []
    for s, n, length in zip(start, size, volume.shape, strict=True):
        lo, hi = max(s, 0), min(s + n, length)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[tuple(dst)] = volume[tuple(src)]
    return out, tuple(src), tuple(dst)


@torch.no_grad()
def attention_volume(
    encoder: PretrainedEncoder,
    volume: np.ndarray,
    work: sitk.Image,
    starts: Sequence[Sequence[int]] | None = None,
    overlap: float = 0.5,
    batch_size: int = 2,
) -> AttentionVolume:
    """SATT of ``encoder`` over a windowed (z, y, x) volume, stitched from training-size windows.

    Args:
        encoder: a pretrained encoder with an attention map (Swin with SA, or ViT).
        volume: (z, y, x) float32 in [0, 1] (from :func:`prepare_ct`).
        work: the image ``volume`` came from (for the geometry of the result).
        starts: window starts (z, y, x) in voxels; default: sliding windows over the whole volume.
        overlap: overlap of the default sliding windows.
        batch_size: windows per forward pass.

    Returns:
        :class:`AttentionVolume`.
    """
    if not encoder.has_attention:
        raise ValueError(
            f"encoder {encoder.method!r} has no semantic attention (Swin without SA): no attention map to show"
        )
    size = encoder.input_size
    if starts is None:
        axes = [sliding_starts(n, w, overlap) for n, w in zip(volume.shape, size, strict=True)]
        starts = [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]
    total = np.zeros(volume.shape, dtype=np.float64)
    count = np.zeros(volume.shape, dtype=np.float64)
    starts = [tuple(int(v) for v in s) for s in starts]
    for first in range(0, len(starts), max(1, int(batch_size))):
        group = starts[first : first + batch_size]
        crops = [_crop(volume, s, size) for s in group]
        batch = torch.from_numpy(np.stack([c[0] for c in crops])[:, None])
        out = encoder.forward(batch)
        grid = out.token_grid
        maps = (out.satt.float() * out.satt.shape[1]).reshape(len(group), 1, *grid)
        maps = F.interpolate(maps, size=size, mode="trilinear", align_corners=False)[:, 0].cpu().numpy()
        for (_, src, dst), values in zip(crops, maps, strict=True):
            total[src] += values[dst]
            count[src] += 1.0
    covered = count > 0
    values = np.zeros(volume.shape, dtype=np.float32)
    values[covered] = (total[covered] / count[covered]).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(work)
    return AttentionVolume(values=values, covered=covered, image=image)


def to_reference_grid(image: sitk.Image, reference: sitk.Image, interpolator: str = "linear") -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (size, spacing, origin, direction), 0 outside.

    "linear" gives float32 (attention maps); "nearest" keeps labels as uint8 (masks).
    """
    if interpolator not in ("linear", "nearest"):
        raise ValueError(f"interpolator must be 'linear' or 'nearest', got {interpolator!r}")
    nearest = interpolator == "nearest"
    return sitk.Resample(
        image,
        reference,
        sitk.Transform(),
        sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
        0.0,
        sitk.sitkUInt8 if nearest else sitk.sitkFloat32,
    )


def write_image(image: sitk.Image, path: Path) -> Path:
    """Write an image atomically (temporary name in the same folder, then rename; the suffix picks the format)."""
    return write_image_atomic(path, image)


def write_overlay_pngs(
    ct: sitk.Image,
    attention: sitk.Image,
    out_dir: str | os.PathLike[str],
    stem: str = "attention",
    title: str = "",
    alpha: float = 0.45,
) -> dict[str, Path]:
    """PNG overlays of the central axial, coronal and sagittal slices of ``attention`` on ``ct``.

    Both images must share one grid (``attention`` from :func:`to_reference_grid`). They are reoriented to
    LPS for display, so the views are anatomical whatever the CT's direction.

    Returns:
        ``{"axial": path, "coronal": path, "sagittal": path}`` (``<stem>_<view>.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct_lps = sitk.DICOMOrient(ct, "LPS")
    att_lps = sitk.DICOMOrient(attention, "LPS")
    grey = sitk.GetArrayFromImage(ct_lps).astype(np.float32)
    heat = sitk.GetArrayFromImage(att_lps).astype(np.float32)
    if grey.shape != heat.shape:
        raise ValueError(f"CT {grey.shape} and attention {heat.shape} are not on one grid")
    sx, sy, sz = ct_lps.GetSpacing()
    zc, yc, xc = (n // 2 for n in grey.shape)
    # colour range: robust percentiles of the covered voxels, so that a nearly uniform map still shows contrast
    inside = heat[heat > 0]
    low, top = np.percentile(inside, [1.0, 99.5]) if inside.size else (0.0, 1.0)
    low, top = float(low), float(max(top, low + 1e-6))
    # (slice of the grey volume, slice of the heat map, aspect = row spacing / column spacing, origin)
    views = {
        "axial": (grey[zc], heat[zc], sy / sx, "upper"),
        "coronal": (grey[:, yc, :], heat[:, yc, :], sz / sx, "lower"),
        "sagittal": (grey[:, :, xc], heat[:, :, xc], sz / sy, "lower"),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for view, (g, h, aspect, origin) in views.items():
        fig, ax = plt.subplots(figsize=(5, 5 * min(max(aspect * g.shape[0] / g.shape[1], 0.3), 3.0)))
        ax.imshow(
            g, cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1], aspect=aspect, origin=origin
        )
        shown = ax.imshow(h, cmap="jet", alpha=alpha, vmin=low, vmax=top, aspect=aspect, origin=origin)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="attention (1 = uniform)")
        ax.set_title(f"{title} {view}".strip())
        ax.set_axis_off()
        path = out_dir / f"{stem}_{view}.png"
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
        finally:
            plt.close(fig)
        written[view] = path
    return written


def run_attention_map(
    encoder_dir: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spacing: float = 2.0,
    window: Sequence[float] = (-175.0, 250.0),
    overlap: float = 0.5,
    input_size: int | None = None,
    method: str | None = None,
    stem: str = "attention",
) -> dict[str, Path]:
    """Attention map of one encoder on one CT, as a NIfTI on the CT's grid and PNG overlays.

    Writes ``out_dir/<stem>.nii.gz`` (float32, attention relative to uniform, exactly the CT's geometry) and
    ``out_dir/<stem>_{axial,coronal,sagittal}.png``.

    Returns:
        Paths under "nifti", "axial", "coronal", "sagittal".
    """
    from dagman.tasks.embeddings import load_pretrained_encoder

    encoder = load_pretrained_encoder(encoder_dir, input_size=input_size, method=method)
    ct = read_ct(image_path)
    work, volume = prepare_ct(ct, spacing, window)
    attention = attention_volume(encoder, volume, work, overlap=overlap)
    on_ct = to_reference_grid(attention.image, ct, "linear")
    out_dir = Path(out_dir)
    written = {"nifti": write_image(on_ct, out_dir / f"{stem}.nii.gz")}
    written.update(write_overlay_pngs(ct, on_ct, out_dir, stem=stem, title=encoder.method))
    return written
