"""Conversion benchmark: dcm2niix against ``dagman convert`` and ``dagman convert`` + ``dagman resample``.

Writes the synthetic demo cohort, keeps its good series (the ones every converter should turn into a volume),
and times on exactly those files, in one run:
  (a) Debian's ``dcm2niix`` (gzip NIfTI, no JSON sidecars),
  (b) our converter (``dagman.io.convert.convert_tree``),
  (c) our converter followed by resampling to the 2 mm training cache (``dagman.io.cache.build_cache``).
The files are read once before timing, so every stage starts with the same warm page cache.

Run:  .venv/bin/python bench/convert_bench.py [--cases N] [--workers W] [--out bench/out/convert_bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "convert_bench"


@dataclass
class Stage:
    """One timed stage of the benchmark."""

    name: str
    series: int
    slices: int
    wall_s: float


def _link_tree(source: Path, target: Path) -> None:
    """Copy the folder ``source`` to ``target`` with hard links (no data copied) where the filesystem allows."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def _good_series_tree(demo_dir: Path, target: Path) -> tuple[int, int]:
    """Gather the demo's good series into ``target`` (same layout); return (series, slice files)."""
    manifest = pd.read_csv(demo_dir / "manifest.csv", dtype=str, keep_default_na=False)
    good = manifest[manifest["kind"] == "good"]
    if good.empty:
        raise ValueError(f"the demo manifest {demo_dir / 'manifest.csv'} lists no good series")
    n_slices = 0
    for uid in good["series_uid"]:
        folders = sorted((demo_dir / "dicom").glob(f"*/*/{uid}"))
        if len(folders) != 1:
            raise ValueError(
                f"expected one folder for good series {uid} under {demo_dir / 'dicom'}, found {len(folders)}"
            )
        folder = folders[0]
        _link_tree(folder, target / folder.relative_to(demo_dir / "dicom"))
        n_slices += sum(1 for p in folder.rglob("*") if p.is_file())
    return len(good), n_slices


def _warm_page_cache(root: Path) -> None:
    """Read every file under ``root`` once so no stage pays the first disk read."""
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _print_table(stages: list[Stage], reference: float | None) -> None:
    header = f"{'stage':<34} {'series':>6} {'slices':>7} {'wall s':>8} {'slices/s':>9} {'x dcm2niix':>10}"
    print(header)
    print("-" * len(header))
    for stage in stages:
        ratio = f"{stage.wall_s / reference:.2f}" if reference else "n/a"
        rate = stage.slices / stage.wall_s if stage.wall_s > 0 else float("inf")
        print(
            f"{stage.name:<34} {stage.series:>6} {stage.slices:>7} {stage.wall_s:>8.2f} {rate:>9.0f} {ratio:>10}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4, help="demo cases to write (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="demo cohort seed (default 0)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(96, 512, 512),
        metavar=("Z", "Y", "X"),
        help="voxels per demo series (default 96 512 512: clinical 512 x 512 slices)",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(0.7, 0.7, 2.5),
        metavar=("X", "Y", "Z"),
        help="demo voxel spacing in mm (default 0.7 0.7 2.5: a clinical chest CT)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for our convert and resample (default 1, like dcm2niix)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"scratch folder (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)

    from dagman.io.cache import build_cache
    from dagman.io.convert import convert_tree
    from dagman.io.synthetic.demo import write_demo_cohort

    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    demo_dir, input_dir = out / "demo", out / "good_dicom"
    shape = "x".join(map(str, args.shape))
    print(
        f"writing the demo cohort ({args.cases} cases of {shape}, seed {args.seed}) to {demo_dir}",
        file=sys.stderr,
    )
    write_demo_cohort(
        demo_dir, seed=args.seed, n_cases=args.cases, shape=tuple(args.shape), spacing=tuple(args.spacing)
    )
    n_series, n_slices = _good_series_tree(demo_dir, input_dir)
    _warm_page_cache(input_dir)

    stages: list[Stage] = []
    dcm2niix = shutil.which("dcm2niix")
    reference = None
    if dcm2niix:
        # with -z y dcm2niix writes .nii.gz like our stages (through pigz when installed); -z n shows its raw speed
        for label, gzip in (("(a) dcm2niix -z y (.nii.gz)", "y"), ("(a0) dcm2niix -z n (.nii)", "n")):
            target = out / f"dcm2niix_{gzip}"
            target.mkdir()
            command = [dcm2niix, "-z", gzip, "-b", "n", "-f", "%j", "-o", str(target), str(input_dir)]
            wall = _time(lambda c=command: subprocess.run(c, check=True, stdout=subprocess.DEVNULL))
            stages.append(Stage(label, len(list(target.glob("*.nii*"))), n_slices, wall))
        reference = stages[0].wall_s
    convert_dir, cache_dir = out / "convert", out / "cache"
    wall_convert = _time(lambda: convert_tree(input_dir, convert_dir, workers=args.workers, progress=False))
    converted = pd.read_csv(convert_dir / "series.csv", dtype=str, keep_default_na=False)
    n_converted_slices = int(pd.to_numeric(converted["n_slices"]).sum())
    stages.append(Stage("(b) dagman convert", len(converted), n_converted_slices, wall_convert))
    wall_cache = _time(
        lambda: build_cache(convert_dir / "series.csv", cache_dir, spacing=2.0, workers=args.workers)
    )
    stages.append(
        Stage(
            "(c) dagman convert + resample 2 mm",
            len(converted),
            n_converted_slices,
            wall_convert + wall_cache,
        )
    )

    print()
    print(f"{n_series} good demo series, {n_slices} slice files; our stages with --workers {args.workers}")
    _print_table(stages, reference)
    if reference:
        print("x dcm2niix = wall time / wall time of (a); below 1 is faster than dcm2niix writing .nii.gz")
    if not dcm2niix:
        print(
            "\nnote: dcm2niix was not found on PATH, so there is no reference time (Debian: apt-get install dcm2niix)"
        )
    pd.DataFrame([s.__dict__ for s in stages]).to_csv(out / "results.csv", index=False)
    print(f"\nresults: {out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
