"""The NSCLC-like synthetic cohort: chest CT phantoms with a lung tumour, as CT DICOM plus an RTSTRUCT.

:func:`write_nsclc_demo` writes a TCIA-like tree ``OUT/dicom/<PatientID>/<StudyUID>/<SeriesUID>/*.dcm`` per
case: the CT series (:func:`dagman.io.dicom_write.write_ct_series`) and, in a series folder of its own, one
RTSTRUCT made with rt-utils from the painted tumour mask. The tumour ROI's name cycles through the GTV name
variants (so name matching is exercised) and every RTSTRUCT also holds a crude left-lung ROI ``Lung_L``. The
last case's RTSTRUCT holds ``Lung_L`` only, so a cohort builder must report it (no usable GTV) and go on.
``OUT/manifest.csv`` says what each case holds. Everything but rt-utils' creation timestamps is a function
of the seed. Identifying tags carry the fake values of :data:`dagman.io.synthetic.FAKE_IDENTIFIERS`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.cohorts.rtstruct import DEFAULT_GTV_NAMES
from dagman.io.atomic import atomic_path, write_csv_atomic
from dagman.io.dicom_write import derived_uid, write_ct_series
from dagman.io.synthetic.demo import demo_patient_tags
from dagman.io.synthetic.phantom import add_nodule, chest_phantom

__all__ = ["NSCLC_MANIFEST_COLUMNS", "write_nsclc_demo", "write_rtstruct", "tumour_case"]

NSCLC_MANIFEST_COLUMNS = (
    "patient_id",
    "series_uid",
    "rtstruct_file",
    "gtv_roi",
    "roi_names",
    "expected",
    "tumour_voxels",
)
_LUNG_ROI = "Lung_L"


def tumour_case(
    shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chest phantom with one lung tumour (12-20 mm radius, lobulated, sometimes spiculated).

    Args:
        shape: (z, y, x) voxels.
        spacing: (x, y, z) mm.
        rng: all randomness.

    Returns:
        ``(hu, tumour, left_lung)``: int16 (z, y, x) HU and two boolean masks of the same shape.
    """
    from scipy import ndimage

    hu = chest_phantom(shape, spacing, rng)
    sx, sy, sz = (float(s) for s in spacing)
    # Lung parenchyma: -850 HU after smoothing away the noise; outside air (-1000) and tissue fall outside.
    smooth = ndimage.uniform_filter(hu.astype(np.float32), size=3)
    lung = (smooth > -930) & (smooth < -750)
    depth_mm = ndimage.distance_transform_edt(lung, sampling=(sz, sy, sx))
    radius_mm = float(rng.uniform(12.0, 20.0))
    # Tumours sit deep enough in the lung to be mostly surrounded by it, never at the scan's ends.
    margin = int(np.ceil(radius_mm / sz)) + 1
    depth_mm[:margin], depth_mm[-margin:] = 0, 0
    candidates = np.argwhere(depth_mm >= 0.6 * radius_mm)
    if candidates.size == 0:
        candidates = np.argwhere(depth_mm >= depth_mm.max())
    centre = candidates[int(rng.integers(len(candidates)))].astype(float)
    tumour = add_nodule(
        hu,
        centre,
        (radius_mm / sz, radius_mm / sy, radius_mm / sx),
        rng,
        spiculated=bool(rng.random() < 0.3),
        lobulated=True,
        density_hu=float(rng.uniform(20.0, 45.0)),
        noise_hu=25.0,
    )
    # patient left is +x in LPS, i.e. the high half of the x axis
    left_lung = lung & ~tumour
    left_lung[..., : shape[2] // 2] = False
    return hu, tumour, left_lung


def write_rtstruct(
    ct_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    rois: dict[str, np.ndarray],
    uids: tuple[str, str],
) -> None:
    """Write an RTSTRUCT for the CT series in ``ct_dir`` with rt-utils.

    Args:
        ct_dir: folder holding only the CT series' files, written in ascending slice position.
        path: the RTSTRUCT file to write (atomically).
        rois: ``{ROI name: boolean (z, y, x) mask}`` on the CT grid.
        uids: (SeriesInstanceUID, SOPInstanceUID) of the RTSTRUCT.
    """
    from rt_utils import RTStructBuilder

    colours = ([255, 0, 0], [0, 160, 255], [0, 200, 0])
    with warnings.catch_warnings():  # rt-utils sets pydicom attributes that pydicom 3 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        rtstruct = RTStructBuilder.create_new(dicom_series_path=str(ct_dir))
        for k, (name, mask) in enumerate(rois.items()):
            # rt-utils masks are (row, column, slice) with slices in ascending position, as written here
            rtstruct.add_roi(
                mask=np.ascontiguousarray(np.transpose(mask, (1, 2, 0))), name=name, color=colours[k % 3]
            )
    series_uid, sop_uid = uids
    rtstruct.ds.SeriesInstanceUID = series_uid
    rtstruct.ds.SOPInstanceUID = sop_uid
    rtstruct.ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    rtstruct.ds.SeriesDescription = "RTSTRUCT"
    with atomic_path(path) as tmp:
        # rt-utils appends .dcm to names without it
        named = tmp if tmp.suffix == ".dcm" else tmp.with_name(f"{tmp.name}.dcm")
        # rt-utils prints every path it writes, and uses pydicom attributes that pydicom 3 deprecates
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rtstruct.save(str(named))
        os.replace(named, tmp)


def write_nsclc_demo(
    out_dir: str | os.PathLike[str],
    n_cases: int = 6,
    seed: int = 0,
    *,
    shape: Sequence[int] = (48, 128, 128),
    spacing: Sequence[float] = (2.5, 2.5, 3.0),
    progress: bool = True,
) -> pd.DataFrame:
    """Write the NSCLC-like cohort under ``out_dir`` (``dicom/`` and ``manifest.csv``), replacing old output.

    Args:
        out_dir: output folder.
        n_cases: number of patients (at least 2: the last one is the case without a GTV).
        seed: seed of anatomy, tumours and UIDs.
        shape: (z, y, x) voxels of each CT.
        spacing: (x, y, z) mm of each CT.
        progress: show a tqdm bar on stderr.

    Returns:
        The manifest (:data:`NSCLC_MANIFEST_COLUMNS`): ``expected`` is ``ok`` or ``no_gtv``; ``rtstruct_file``
        is relative to ``out_dir``.
    """
    from tqdm import tqdm

    if n_cases < 2:
        raise ValueError(f"the NSCLC demo needs at least 2 cases (one has no GTV), got {n_cases}")
    out = Path(out_dir)
    dicom = out / "dicom"
    if dicom.exists():
        shutil.rmtree(dicom)
    dicom.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for index in tqdm(range(n_cases), desc="NSCLC demo", unit="case", disable=not progress):
        rng = np.random.default_rng([seed, index, 1717])
        hu, tumour, left_lung = tumour_case(shape, spacing, rng)
        tags = dict(demo_patient_tags(seed, index), PatientID=f"NSCLC-DEMO-S{seed}-{index + 1:03d}")
        study_uid = str(derived_uid("dagman-nsclc-demo", seed, index, "study"))
        series_uid = str(derived_uid("dagman-nsclc-demo", seed, index, "ct"))
        rt_series_uid = str(derived_uid("dagman-nsclc-demo", seed, index, "rtstruct-series"))
        rt_sop_uid = str(derived_uid("dagman-nsclc-demo", seed, index, "rtstruct"))
        study_dir = dicom / tags["PatientID"] / study_uid
        ct_dir = study_dir / series_uid
        write_ct_series(
            hu,
            ct_dir,
            spacing=spacing,
            origin=(-0.5 * shape[2] * spacing[0], -0.5 * shape[1] * spacing[1], -0.5 * shape[0] * spacing[2]),
            patient=tags,
            study_uid=study_uid,
            series_uid=series_uid,
            series_description="CT THORAX",
        )
        has_gtv = index < n_cases - 1
        gtv_name = DEFAULT_GTV_NAMES[index % len(DEFAULT_GTV_NAMES)] if has_gtv else ""
        rois = {gtv_name: tumour, _LUNG_ROI: left_lung} if has_gtv else {_LUNG_ROI: left_lung}
        rt_dir = study_dir / rt_series_uid
        rt_dir.mkdir(parents=True)
        rt_path = rt_dir / "1-1.dcm"
        write_rtstruct(ct_dir, rt_path, rois, (rt_series_uid, rt_sop_uid))
        rows.append(
            {
                "patient_id": tags["PatientID"],
                "series_uid": series_uid,
                "rtstruct_file": rt_path.relative_to(out).as_posix(),
                "gtv_roi": gtv_name,
                "roi_names": ";".join(rois),
                "expected": "ok" if has_gtv else "no_gtv",
                "tumour_voxels": int(tumour.sum()) if has_gtv else 0,
            }
        )
    manifest = pd.DataFrame(rows, columns=list(NSCLC_MANIFEST_COLUMNS))
    write_csv_atomic(out / "manifest.csv", manifest)
    return manifest
