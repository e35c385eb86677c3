"""Zero-shot localisation: Dice and percentile thresholding with known answers, cohort checks, the CLI run."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from dagman.cohorts.raters_demo import write_rater_demo
from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import zeroshot_cli
from dagman.tasks.zeroshot import DICE_COLUMNS, dice, read_rater_cohort, threshold_percentile

TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


def test_dice_known_values():
    """Dice = 2|A∩B|/(|A|+|B|): identical 1, disjoint 0, half overlap 0.5; both empty is undefined (NaN)."""
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert math.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
    with pytest.raises(ValueError, match="one shape"):
        dice(a, a[:2])


def test_threshold_keeps_voxels_above_the_90th_percentile_inside_the_region():
    """Values 0..99: the top ten exceed the 90th percentile; voxels outside the region never count."""
    values = np.arange(100, dtype=float).reshape(10, 10)
    top = threshold_percentile(values, percentile=90)
    assert top.sum() == 10 and values[top].min() == 90
    region = values < 50
    inside = threshold_percentile(values, region, 90)
    assert inside.sum() == 5 and values[inside].min() == 45 and not inside[~region].any()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("raters")
    write_rater_demo(root, n_cases=2, n_raters=2, seed=0, shape=(24, 64, 64), spacing=(2.0, 2.0, 3.0))
    return root


def test_rater_cohort_checks(cohort, tmp_path):
    """raters.csv resolves paths against its folder and refuses missing columns and repeated raters."""
    table = read_rater_cohort(cohort / "raters.csv")
    assert len(table) == 4 and all(p.startswith(str(cohort)) for p in table["mask"])
    pd.DataFrame({"case_id": ["a"], "image": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="rater"):
        read_rater_cohort(tmp_path / "bad.csv")
    twice = pd.read_csv(cohort / "raters.csv").iloc[[0, 0]]
    twice.to_csv(cohort / "twice.csv", index=False)
    with pytest.raises(ValueError, match="twice"):
        read_rater_cohort(cohort / "twice.csv")


def test_rater_masks_disagree_like_experts(cohort):
    """Every rater mask is non-empty and on its CT's grid; two raters overlap well but not perfectly."""
    table = read_rater_cohort(cohort / "raters.csv")
    for _, group in table.groupby("case_id"):
        ct = sitk.ReadImage(group["image"].iloc[0])
        masks = [sitk.ReadImage(p) for p in group["mask"]]
        arrays = [sitk.GetArrayFromImage(m) > 0 for m in masks]
        assert all(m.GetSize() == ct.GetSize() and m.GetOrigin() == ct.GetOrigin() for m in masks)
        assert all(a.any() for a in arrays)
        assert 0.4 < dice(arrays[0], arrays[1]) < 1.0


@pytest.mark.parametrize("region", ["whole", "mask-centre"])
def test_zeroshot_cli_end_to_end(cohort, tmp_path, region):
    """`dagman zeroshot` writes one Dice per (case, rater), a summary, and predicted masks on the CT grid."""
    torch.manual_seed(0)
    net = DagmanNetwork(
        "swin",
        img_size=32,
        sa_stage=3,
        out_dim=16,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        backbone_kwargs=TINY,
    )
    export_encoder(net, tmp_path / "dagman" / "encoder.pt")
    parser = argparse.ArgumentParser()
    zeroshot_cli.add_arguments(parser)
    out = tmp_path / "zs"
    args = parser.parse_args(
        [
            "--cohort",
            str(cohort / "raters.csv"),
            "--encoder",
            str(tmp_path / "dagman"),
            "--out",
            str(out),
            "--region",
            region,
            "--overlap",
            "0",
        ]
    )
    assert zeroshot_cli.run(args) == 0
    table = pd.read_csv(out / "dice.csv", dtype={"rater": str})
    assert list(table.columns) == list(DICE_COLUMNS)
    assert len(table) == 4 and table["dice"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    per_case = table.groupby("case_id")["dice"].mean()
    assert summary["dice_mean"] == pytest.approx(per_case.mean())
    assert summary["n_cases"] == 2 and summary["region"] == region
    for case_id, group in table.groupby("case_id"):
        ct = sitk.ReadImage(str(cohort / "images" / f"{case_id}.nii.gz"))
        mask = sitk.ReadImage(str(out / "masks" / f"{case_id}.nii.gz"))
        assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
            ct.GetSize(),
            ct.GetSpacing(),
            ct.GetOrigin(),
            ct.GetDirection(),
        )
        fraction = (sitk.GetArrayFromImage(mask) > 0).mean()
        assert group["predicted_voxels"].iloc[0] == (sitk.GetArrayFromImage(mask) > 0).sum()
        if region == "whole":  # 10 % of the working grid, give or take resampling
            assert 0.05 < fraction < 0.15
