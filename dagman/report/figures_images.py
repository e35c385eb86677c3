"""Image figures: attention-map overlays (EXPERIMENTS D12) and zero-shot localisation examples (D5).

- ``attention_maps``: methods (rows) x cases (columns), the axial overlay PNG ``dagman attention-map`` wrote for
  each case (CT + attention, its own colour bar); the attention-map folder holds no CT, so the PNGs are tiled
  rather than re-rendered (a missing PNG is drawn from the NIfTI alone).
- ``zeroshot_examples``: cases (rows) x methods (columns), the axial CT slice where the raters' masks are
  largest, each rater's contour and the method's thresholded attention mask (attention above the runs' percentile),
  cropped around the tumour; the panel title gives the case's Dice averaged over raters.

Cases are labelled "case 1", "case 2", ... in sorted case-id order, so no identifier reaches a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dagman.report.figures_base import figure_legend, house_style, new_figure, suptitle
from dagman.report.style import display_name, method_colour, sort_methods

__all__ = ["MAX_CASES", "RATER_STYLES", "plot_attention_maps", "plot_zeroshot_examples", "read_lps"]

#: at most this many cases per figure (the first ones in case-id order)
MAX_CASES = 4
#: line styles of up to five raters' contours (one colour for all raters; the method colour marks predictions)
RATER_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))
_RATER_COLOUR = "#FFE119"
_CT_WINDOW = (-1000.0, 400.0)  # HU; the same window as the attention-map PNGs (lung and soft tissue)
_MIN_CROP_MM = 100.0


def read_lps(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """An image reoriented to LPS as a (z, y, x) array and its (x, y, z) spacing: axial slices read anatomically."""
    import SimpleITK as sitk

    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def _case_labels(cases: Sequence[str]) -> dict[str, str]:
    return {case: f"case {i + 1}" for i, case in enumerate(sorted(cases))}


# ----------------------------------------------------------------------------------------- attention maps
def _draw_from_nifti(ax, nifti: Path) -> None:
    """Fallback panel: the central axial slice of the attention NIfTI alone (no CT in the folder)."""
    values, spacing = read_lps(nifti)
    ax.imshow(values[values.shape[0] // 2], cmap="jet", aspect=spacing[1] / spacing[0])
    ax.text(
        0.5, 0.02, "attention only (no PNG)", transform=ax.transAxes, ha="center", fontsize=7, color="white"
    )


@house_style
def plot_attention_maps(maps: pd.DataFrame, view: str = "axial"):
    """Tile ``list_attention_maps`` rows: a row per method, a column per case (first ``MAX_CASES``)."""
    import matplotlib.image as mpimg

    rows = maps[maps["view"] == view]
    if rows.empty:
        raise ValueError(f"no attention maps with a {view} view to plot")
    methods = sort_methods(rows["method"])
    labels = _case_labels(rows["case"].unique())
    cases = sorted(labels)[:MAX_CASES]
    fig, axes = new_figure(
        len(methods), len(cases), width=max(3.0 * len(cases) + 0.6, 5.0), height=3.0 * len(methods) + 0.7
    )
    for r, method in enumerate(methods):
        for c, case in enumerate(cases):
            ax = axes[r][c]
            ax.set_axis_off()
            hit = rows[(rows["method"] == method) & (rows["case"] == case)]
            if hit.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="grey")
            elif str(hit.iloc[0]["png"]):
                ax.imshow(mpimg.imread(hit.iloc[0]["png"]))
            else:
                _draw_from_nifti(ax, Path(hit.iloc[0]["nifti"]))
            if r == 0:
                ax.set_title(labels[case])
            if c == 0:
                ax.text(
                    -0.06,
                    0.5,
                    display_name(method),
                    transform=ax.transAxes,
                    rotation=90,
                    ha="right",
                    va="center",
                    fontsize=10,
                    fontweight="bold",
                    color=method_colour(method),
                )
    suptitle(fig, f"Attention maps of the pretrained encoders (central {view} slice)")
    return fig


# ---------------------------------------------------------------------------------------------- zero-shot
def _crop_box(union: np.ndarray, spacing: tuple[float, float, float]) -> tuple[slice, slice]:
    """(rows, cols) slices of an axial crop centred on ``union``: 2.5x its extent, at least ``_MIN_CROP_MM``."""
    ys, xs = np.nonzero(union)
    out = []
    for coords, size, step in ((ys, union.shape[0], spacing[1]), (xs, union.shape[1], spacing[0])):
        centre = (coords.min() + coords.max()) / 2
        half = max(1.25 * (coords.max() - coords.min() + 1), _MIN_CROP_MM / step / 2)
        low = int(max(round(centre - half), 0))
        out.append(slice(low, int(min(round(centre + half) + 1, size))))
    return out[0], out[1]


def _load_case(group: pd.DataFrame):
    """CT (LPS), its spacing, the raters' masks {rater: array} and the axial slice where their union is largest."""
    ct, spacing = read_lps(group.iloc[0]["image"])
    masks = {}
    for row in group.itertuples():
        mask, _ = read_lps(row.mask)
        if mask.shape != ct.shape:
            raise ValueError(f"rater mask {row.mask} has shape {mask.shape}, its CT {ct.shape}")
        masks[str(row.rater)] = mask > 0
    union = np.logical_or.reduce(list(masks.values()))
    z = int(np.argmax(union.sum(axis=(1, 2))))
    return ct, spacing, masks, z


@house_style
def plot_zeroshot_examples(
    cohort: pd.DataFrame,
    zeroshot_dirs: dict[str, Path],
    dice: pd.DataFrame,
    threshold: str = "90th percentile",
):
    """Zero-shot examples: ``load_zeroshot_cohort`` rows, each method's folder (masks/), ``load_zeroshot`` rows;
    ``threshold`` names the attention threshold the runs used (:func:`~dagman.report.results.percentile_text`)."""
    if cohort.empty or not zeroshot_dirs:
        raise ValueError("zero-shot examples need the raters.csv cohort and at least one zero-shot folder")
    methods = sort_methods(zeroshot_dirs)
    labels = _case_labels(cohort["case_id"].astype(str).unique())
    cases = sorted(labels)[: min(MAX_CASES, 3)]
    raters = sorted(cohort["rater"].astype(str).unique())
    fig, axes = new_figure(
        len(cases), len(methods), width=2.6 * len(methods) + 0.6, height=2.6 * len(cases) + 1.0
    )
    for r, case in enumerate(cases):
        ct, spacing, masks, z = _load_case(cohort[cohort["case_id"].astype(str) == case])
        union = np.logical_or.reduce(list(masks.values()))[z]
        rows, cols = _crop_box(union, spacing)
        aspect = spacing[1] / spacing[0]
        for c, method in enumerate(methods):
            ax = axes[r][c]
            ax.imshow(ct[z][rows, cols], cmap="gray", vmin=_CT_WINDOW[0], vmax=_CT_WINDOW[1], aspect=aspect)
            path = Path(zeroshot_dirs[method]) / "masks" / f"{case}.nii.gz"
            title = display_name(method)
            if path.is_file():
                predicted, _ = read_lps(path)
                if predicted.shape != ct.shape:
                    raise ValueError(f"{path} has shape {predicted.shape}, its CT {ct.shape}")
                shown = predicted[z][rows, cols] > 0
                colour = method_colour(method)
                ax.imshow(
                    np.ma.masked_where(~shown, shown),
                    cmap=_single(colour),
                    alpha=0.45,
                    aspect=aspect,
                    vmin=0,
                    vmax=1,
                )
                if shown.any() and not shown.all():
                    ax.contour(shown, levels=[0.5], colors=[colour], linewidths=1.0)
                scores = dice[(dice["method"] == method) & (dice["case_id"].astype(str) == case)][
                    "dice"
                ].dropna()
                if len(scores):
                    raters_text = "1 rater" if len(scores) == 1 else f"mean of {len(scores)} raters"
                    title += f"\nDice {scores.mean():.2f} ({raters_text})"
            else:
                title += "\n(no mask)"
            for k, rater in enumerate(raters):
                if rater in masks and masks[rater][z][rows, cols].any():
                    ax.contour(
                        masks[rater][z][rows, cols],
                        levels=[0.5],
                        colors=[_RATER_COLOUR],
                        linewidths=1.0,
                        linestyles=[RATER_STYLES[k % len(RATER_STYLES)]],
                    )
            ax.set_title(title, fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(labels[case], fontsize=10)
    suptitle(fig, f"Zero-shot tumour localisation: attention > {threshold} vs expert contours (axial CT)")
    handles = [
        Line2D([], [], color=_RATER_COLOUR, ls=RATER_STYLES[k % len(RATER_STYLES)], label=f"rater {k + 1}")
        for k in range(len(raters))
    ]
    handles += [
        Patch(facecolor=method_colour(m), alpha=0.6, label=f"{display_name(m)} mask") for m in methods
    ]
    figure_legend(fig, handles, max_columns=6)
    return fig


def _single(colour: str):
    """A one-colour colormap (the mask's filled area in the method colour)."""
    from matplotlib.colors import ListedColormap

    return ListedColormap([colour, colour])
