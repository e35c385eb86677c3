"""The demo's labelled outcome cohort (Task 3, DESIGN 2.7): chest CT phantoms with one lung tumour each.

Each case is a small chest phantom written as a DICOM series (with fake identifying tags, so PHI hygiene is
exercised downstream) and one tumour painted in the lung. The binary outcome depends on the tumour's
appearance, so it is learnable from a crop:

- label 1 (e.g. non-response): larger (radius 8-13 mm), spiculated, heterogeneous (HU noise 90 around +10 HU);
- label 0 (e.g. response): smaller (radius 5-10 mm), smooth or lobulated, homogeneous (HU noise 15 around +50 HU).

The radii overlap, so size alone does not separate the classes. Half of the cases (even index) come with a
tumour mask (NIfTI on the CT grid), the other half with the tumour centre in patient coordinates, so both
ways of giving the location are exercised. Outputs in ``out_dir``:

- ``dicom/<PatientID>/<study>/<series>/*.dcm``: one CT series per case;
- ``masks/<case_id>.nii.gz``: tumour masks of the even cases;
- ``cohort.csv``: the cohort CSV ``dagman cohort-crops`` reads (case_id, patient_id, image, label, mask,
  center_x, center_y, center_z);
- ``truth.csv``: the painted tumour per case (label, radius_mm, spiculated, lobulated, density_hu, noise_hu,
  voxels), for checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.cohorts.lidc import map_scans, write_csv
from dagman.io.atomic import write_image_atomic

__all__ = ["OUTCOME_COHORT_COLUMNS", "TRUTH_COLUMNS", "paint_outcome_case", "write_outcome_demo"]

OUTCOME_COHORT_COLUMNS = [
    "case_id",
    "patient_id",
    "image",
    "label",
    "mask",
    "center_x",
    "center_y",
    "center_z",
]
TRUTH_COLUMNS = [
    "case_id",
    "label",
    "radius_mm",
    "spiculated",
    "lobulated",
    "density_hu",
    "noise_hu",
    "voxels",
]
#: lung voxels are below this (phantom lung is -850 HU plus noise)
_LUNG_HU = -600.0


@dataclass(frozen=True)
class _CaseTask:
    index: int
    label: int
    seed: int
    out_dir: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _lung_position(
    hu: np.ndarray, spacing_zyx: np.ndarray, radius_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """A voxel deep enough inside the lung for a tumour of ``radius_mm`` (the deepest one if none is)."""
    from scipy.ndimage import binary_fill_holes, distance_transform_edt

    # the lung is air inside the body: fill each slice's body outline, so the air around the body is excluded
    body = np.stack([binary_fill_holes(section) for section in hu > _LUNG_HU])
    lung = (hu < _LUNG_HU) & body
    # keep away from the first/last slices: the tumour must fit in the scan
    lung[:2], lung[-2:] = False, False
    depth = distance_transform_edt(lung, sampling=spacing_zyx)
    candidates = np.argwhere(depth >= radius_mm + 2.0)
    if len(candidates) == 0:
        return np.unravel_index(int(np.argmax(depth)), depth.shape)
    return candidates[int(rng.integers(len(candidates)))]


def paint_outcome_case(
    index: int, label: int, seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The phantom volume, tumour mask and tumour description of one case (deterministic in its arguments).

    Args:
        index: case index; label: 0 or 1; seed: cohort seed.
        shape: (z, y, x) voxels; spacing: (x, y, z) mm.

    Returns:
        (HU volume int16 (z, y, x), boolean tumour mask, truth row without case_id).
    """
    from dagman.io.synthetic.phantom import add_nodule, chest_phantom

    rng = np.random.default_rng([seed, 7, index])
    hu = chest_phantom(shape, spacing, rng)
    spacing_zyx = np.array(spacing[::-1], dtype=float)
    if label:
        radius_mm = float(rng.uniform(8, 13))
        spiculated, lobulated, density, noise = True, True, 10.0, 90.0
    else:
        radius_mm = float(rng.uniform(5, 10))
        spiculated, lobulated, density, noise = False, bool(rng.random() < 0.5), 50.0, 15.0
    centre = _lung_position(hu, spacing_zyx, radius_mm, rng)
    mask = add_nodule(
        hu,
        centre,
        radius_mm / spacing_zyx,
        rng,
        spiculated=spiculated,
        lobulated=lobulated,
        density_hu=density,
        noise_hu=noise,
    )
    truth = dict(
        label=int(label),
        radius_mm=round(radius_mm, 3),
        spiculated=int(spiculated),
        lobulated=int(lobulated),
        density_hu=density,
        noise_hu=noise,
        voxels=int(mask.sum()),
    )
    return hu, mask, truth


def _write_case(task: _CaseTask) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pool worker: paint one case and write its DICOM series (and mask); returns cohort and truth rows."""
    import SimpleITK as sitk

    from dagman.io.dicom_write import derived_uid, write_ct_series
    from dagman.io.synthetic import demo_patient_tags

    case_id = f"outcome-{task.index + 1:03d}"
    hu, mask, truth = paint_outcome_case(task.index, task.label, task.seed, task.shape, task.spacing)
    nz, ny, nx = task.shape
    sx, sy, sz = task.spacing
    origin = (-(nx - 1) * sx / 2.0, -(ny - 1) * sy / 2.0, -(nz - 1) * sz / 2.0)
    tags = demo_patient_tags(task.seed, task.index)
    patient = f"OUTCOME-{task.index + 1:04d}"
    tags["PatientID"] = patient
    study_uid = str(derived_uid("dagman-outcome", task.seed, task.index, "study"))
    series_uid = str(derived_uid("dagman-outcome", task.seed, task.index, "series"))
    series_dir = Path("dicom", patient, f"study-{study_uid[-8:]}", f"series-{series_uid[-8:]}")
    write_ct_series(
        hu,
        task.out_dir / series_dir,
        spacing=task.spacing,
        origin=origin,
        patient=tags,
        study_uid=study_uid,
        series_uid=series_uid,
        series_description="outcome demo chest CT",
    )
    row: dict[str, Any] = dict(
        case_id=case_id, patient_id=patient, image=series_dir.as_posix(), label=task.label
    )
    row.update(mask=None, center_x=None, center_y=None, center_z=None)
    if task.index % 2 == 0:
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(task.spacing)
        image.SetOrigin(origin)
        rel = Path("masks", f"{case_id}.nii.gz")
        write_image_atomic(task.out_dir / rel, image)
        row["mask"] = rel.as_posix()
    else:
        # identity direction: patient coordinates = origin + index * spacing (x, y, z)
        centre_zyx = np.argwhere(mask).mean(axis=0)
        row["center_x"], row["center_y"], row["center_z"] = (
            round(float(o + c * s), 3) for o, c, s in zip(origin, centre_zyx[::-1], task.spacing, strict=True)
        )
    return row, {"case_id": case_id, **truth}


def write_outcome_demo(
    out_dir: str | Path,
    *,
    n_cases: int = 32,
    positive_fraction: float = 0.4,
    seed: int = 0,
    shape: tuple[int, int, int] = (40, 96, 96),
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    workers: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the demo outcome cohort (module docstring) and return its cohort table.

    Args:
        out_dir: output folder.
        n_cases: cases (one per patient); 24-40 suit a test set plus 3-fold CV.
        positive_fraction: share of label-1 cases (below 0.5 exercises the class weighting).
        seed: all randomness (labels, anatomy, tumours, UIDs) follows from it.
        shape: (z, y, x) voxels of each CT; spacing: (x, y, z) mm.
        workers: processes (None = all cores).
        progress: tqdm bar on stderr.
    """
    if n_cases < 2 or not 0 < positive_fraction < 1:
        raise ValueError(
            f"need n_cases >= 2 and 0 < positive_fraction < 1, got {n_cases} and {positive_fraction}"
        )
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_pos = min(max(1, round(positive_fraction * n_cases)), n_cases - 1)
    labels = np.random.default_rng([seed, 3]).permutation([1] * n_pos + [0] * (n_cases - n_pos))
    tasks = [
        _CaseTask(
            i, int(labels[i]), seed, out, tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
        )
        for i in range(n_cases)
    ]
    results = map_scans(_write_case, tasks, workers, "writing outcome demo", progress)
    cohort = pd.DataFrame([r[0] for r in results], columns=OUTCOME_COHORT_COLUMNS)
    write_csv(cohort, out / "cohort.csv")
    write_csv(pd.DataFrame([r[1] for r in results], columns=TRUTH_COLUMNS), out / "truth.csv")
    return cohort
