"""Tests of `dagman finetune`: outputs, strict encoder loading, determinism and the held-out test guard."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from dagman.cohorts.splits import heldout_keys, make_splits, write_splits
from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import finetune_cli
from dagman.tasks.classification import (
    ClassificationSettings,
    EncoderSpec,
    ResNetEncoder,
    build_encoder,
    finetune,
    load_med3d_weights,
)

SWIN = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))
FAST = dict(epochs=3, lp_epochs=15, batch_size=4, n_bootstrap=200, num_workers=1, threads=1)


def _write_crop(path: Path, label: int, rng: np.random.Generator, noise_only: bool = False) -> None:
    """A 32^3 HU crop: lung background with a soft-tissue ball, large for label 1 and small for label 0."""
    hu = rng.normal(-850, 30, size=(32, 32, 32))
    if not noise_only:
        z, y, x = np.mgrid[:32, :32, :32]
        radius = 7 if label else 3
        hu[(z - 16) ** 2 + (y - 16) ** 2 + (x - 16) ** 2 <= radius**2] = 40
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _write_cohort(root: Path, n: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """Crops table and split file of ``n`` single-crop patients (test 6, 3 folds)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        key, label = f"case{i:02d}", i % 2
        _write_crop(root / "images" / f"{key}.nii.gz", label, rng)
        rows.append(
            dict(key=key, patient_id=f"p{i:02d}", label=label, image=f"images/{key}.nii.gz", status="cropped")
        )
    table = pd.DataFrame(rows)
    table.to_csv(root / "crops.csv", index=False)
    splits = make_splits(table, test_size=6, n_folds=3, fractions=(0.5,), seed=seed)
    write_splits(splits, root / "splits", {"seed": seed})
    return root / "crops.csv", root / "splits" / "splits.csv"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported DAGMaN encoder (Swin + SA at stage 3)."""
    torch.manual_seed(0)
    network = DagmanNetwork(
        "swin", img_size=32, out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8, backbone_kwargs=SWIN
    )
    folder = tmp_path_factory.mktemp("pretrain") / "dagman"
    export_encoder(network, folder / "encoder.pt")
    return folder


def test_linear_probe_writes_predictions_and_metrics(
    cohort: tuple[Path, Path], encoder_dir: Path, tmp_path: Path
) -> None:
    """LP writes val+test predictions for exactly the split file's rows, and the metrics the summary reads."""
    table, splits_csv = cohort
    metrics = finetune(
        table,
        splits_csv,
        tmp_path,
        encoder=EncoderSpec("pretrained", encoder_dir),
        mode="lp",
        fraction=1.0,
        fold=1,
        settings=ClassificationSettings(**FAST),
        progress=False,
    )
    splits = pd.read_csv(splits_csv, dtype={"key": str})
    predictions = pd.read_csv(tmp_path / "predictions.csv", dtype={"key": str})
    assert list(predictions.columns) == ["key", "set", "label", "prob"]
    assert set(predictions.loc[predictions["set"] == "test", "key"]) == set(heldout_keys(splits))
    val = splits[(splits["set"] == "train") & (splits["fold"] == 1)]
    assert set(predictions.loc[predictions["set"] == "val", "key"]) == set(val["key"])
    assert predictions["prob"].between(0, 1).all()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        on_disk["method"] == "dagman"
        and on_disk["embedding"] == "cls"
        and on_disk["encoder"]["sa_stage"] == 3
    )
    test = on_disk["test"]
    assert test["auc_ci_low"] <= test["auc"] <= test["auc_ci_high"]
    assert {"sensitivity", "specificity", "precision", "recall", "threshold"} <= set(test)
    assert metrics["n_train"] + metrics["n_val"] == int((splits["set"] == "train").sum())
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) == FAST["lp_epochs"] and 1 <= metrics["best_epoch"] <= FAST["lp_epochs"]
    assert metrics["val_auc"] == pytest.approx(history["val_auc"].iloc[metrics["best_epoch"] - 1])


def test_pretrained_weights_load_strictly_and_random_control_has_none(encoder_dir: Path) -> None:
    """A pretrained encoder carries the exported tensors exactly; the random control the same shapes only."""
    settings = ClassificationSettings()
    exported = torch.load(encoder_dir / "encoder.pt", weights_only=True)
    torch.manual_seed(5)
    pretrained, info = build_encoder(EncoderSpec("pretrained", encoder_dir), settings)
    torch.manual_seed(5)
    random_enc, random_info = build_encoder(EncoderSpec("random", encoder_dir), settings)
    ours, control = pretrained.backbone.swinViT.state_dict(), random_enc.backbone.swinViT.state_dict()
    assert set(ours) == set(exported) == set(control)
    assert all(torch.equal(ours[k], exported[k]) for k in exported)
    assert not torch.equal(
        control["layers1.0.blocks.0.attn.qkv.weight"], exported["layers1.0.blocks.0.attn.qkv.weight"]
    )
    assert info["kind"] == "pretrained" and random_info["kind"] == "random"
    pooled, pooled_info = build_encoder(
        EncoderSpec("pretrained", encoder_dir), ClassificationSettings(embedding="pooled")
    )
    x = torch.rand(2, 1, 32, 32, 32)
    assert pretrained.eval()(x).shape == (2, 48) and pooled.eval()(x).shape == (2, 96)
    assert pooled_info["embedding"] == "pooled"


def test_mismatched_encoder_weights_fail_loudly(encoder_dir: Path, tmp_path: Path) -> None:
    """An encoder file that misses a tensor is refused, never loaded with strict=False."""
    broken = tmp_path / "broken"
    shutil.copytree(encoder_dir, broken)
    state = torch.load(broken / "encoder.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, broken / "encoder.pt")
    with pytest.raises(ValueError, match="missing"):
        build_encoder(EncoderSpec("pretrained", broken), ClassificationSettings())


def test_rerun_with_same_seed_gives_identical_outputs(
    cohort: tuple[Path, Path], encoder_dir: Path, tmp_path: Path
) -> None:
    """Fine-tuning twice with one seed gives byte-identical predictions and metrics."""
    table, splits_csv = cohort
    for name in ("a", "b"):
        finetune(
            table,
            splits_csv,
            tmp_path / name,
            encoder=EncoderSpec("pretrained", encoder_dir),
            mode="ft",
            fraction=0.5,
            fold=2,
            settings=ClassificationSettings(**FAST),
            progress=False,
        )
    for name in ("predictions.csv", "metrics.json", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.slow
def test_heldout_test_cases_never_reach_training_or_selection(encoder_dir: Path, tmp_path: Path) -> None:
    """Poisoning the test crops (noise images, flipped labels) leaves weights, chosen epoch and val outputs unchanged."""
    clean_table, clean_splits = _write_cohort(tmp_path / "clean")
    poisoned_table, poisoned_splits = _write_cohort(tmp_path / "poisoned")
    splits = pd.read_csv(poisoned_splits, dtype={"key": str})
    test = splits["set"] == "test"
    rng = np.random.default_rng(99)
    for key in splits.loc[test, "key"]:
        _write_crop(tmp_path / "poisoned" / "images" / f"{key}.nii.gz", 0, rng, noise_only=True)
    splits.loc[test, "label"] = 1 - splits.loc[test, "label"]
    splits.to_csv(poisoned_splits, index=False)
    crops = pd.read_csv(poisoned_table, dtype={"key": str})
    flip = crops["key"].isin(splits.loc[test, "key"])
    crops.loc[flip, "label"] = 1 - crops.loc[flip, "label"]
    crops.to_csv(poisoned_table, index=False)

    runs = {}
    for name, table, splits_csv in (
        ("clean", clean_table, clean_splits),
        ("poisoned", poisoned_table, poisoned_splits),
    ):
        out = tmp_path / f"run-{name}"
        finetune(
            table,
            splits_csv,
            out,
            encoder=EncoderSpec("pretrained", encoder_dir),
            mode="ft",
            fraction=1.0,
            fold=3,
            settings=ClassificationSettings(**{**FAST, "save_model": True}),
            progress=False,
        )
        runs[name] = out
    clean = json.loads((runs["clean"] / "metrics.json").read_text())
    poisoned = json.loads((runs["poisoned"] / "metrics.json").read_text())
    for key in ("best_epoch", "val_auc", "val_loss", "n_train", "n_val"):
        assert clean[key] == poisoned[key]
    assert clean["test"]["threshold"] == poisoned["test"]["threshold"]
    weights = [
        torch.load(runs[n] / "model.pt", weights_only=True)["state_dict"] for n in ("clean", "poisoned")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (runs["clean"] / "history.csv").read_bytes() == (runs["poisoned"] / "history.csv").read_bytes()
    preds = [pd.read_csv(runs[n] / "predictions.csv") for n in ("clean", "poisoned")]
    val = [p[p["set"] == "val"].reset_index(drop=True) for p in preds]
    pd.testing.assert_frame_equal(val[0], val[1])
    # the poison did reach the test evaluation: test labels and predictions changed
    assert not preds[0][preds[0]["set"] == "test"]["label"].equals(
        preds[1][preds[1]["set"] == "test"]["label"]
    )


def test_med3d_weights_load_strictly(tmp_path: Path) -> None:
    """A MedicalNet-style checkpoint (state_dict, module. prefix, conv_seg head) loads; a partial one fails."""
    torch.manual_seed(0)
    source = ResNetEncoder()
    state = {f"module.{k}": v for k, v in source.net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "resnet_50.pth")
    torch.manual_seed(1)
    target = ResNetEncoder()
    report = load_med3d_weights(target, tmp_path / "resnet_50.pth")
    assert "skipped 1 head keys" in report
    assert all(torch.equal(target.net.state_dict()[k], v) for k, v in source.net.state_dict().items())
    state.pop("module.conv1.weight")
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="conv1.weight"):
        load_med3d_weights(ResNetEncoder(), tmp_path / "partial.pth")


@pytest.mark.slow
def test_cli_trains_resnet50_baseline(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    """`dagman finetune --resnet50` runs end to end through the CLI's run()."""
    table, splits_csv = cohort
    parser = argparse.ArgumentParser()
    finetune_cli.add_arguments(parser)
    settings = json.dumps({**FAST, "epochs": 1})
    args = parser.parse_args(
        ["--table", str(table), "--splits", str(splits_csv), "--resnet50", "--mode", "ft", "--fold", "1"]
        + ["--out", str(tmp_path), "--settings", settings, "--task", "lidc", "--quiet"]
    )
    assert finetune_cli.run(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["method"] == "resnet50" and metrics["task"] == "lidc" and metrics["embedding"] == "pooled"


def test_settings_reject_unknown_keys() -> None:
    """A typo in the settings fails instead of doing nothing."""
    with pytest.raises(ValueError, match="unknown fine-tuning settings"):
        ClassificationSettings.from_mapping({"epoch": 3})


def _fake_run(
    folder: Path, method: str, fold: int, keys: list[str], labels: np.ndarray, probs: np.ndarray
) -> None:
    """A run folder as finetune writes it (test predictions only matter to the summary)."""
    from dagman.tasks.metrics import roc_auc

    folder.mkdir(parents=True)
    pd.DataFrame({"key": keys, "set": "test", "label": labels, "prob": probs}).to_csv(
        folder / "predictions.csv", index=False
    )
    test = dict(auc=roc_auc(labels, probs), auc_ci_low=0.0, auc_ci_high=1.0, threshold=0.5)
    test.update(sensitivity=0.5, specificity=0.5, precision=0.5, recall=0.5, tp=1, fp=1, tn=1, fn=1)
    metrics = dict(method=method, task="lidc", mode="ft", fraction=1.0, regime="100%", fold=fold)
    metrics.update(
        embedding="cls", encoder={"kind": "pretrained"}, test=test, val_auc=0.7, settings={"seed": 0}
    )
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_summary_tables_aggregate_folds_and_compare_with_dagman(tmp_path: Path) -> None:
    """results.csv has one row per run, summary.csv mean ± sd over folds, comparisons.csv DeLong on the fold mean."""
    from dagman.tasks.classification_summary import write_classification_summary
    from dagman.tasks.metrics import delong_test

    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(30)]
    labels = np.arange(30) % 2
    probs = {}
    for method, signal in (("dagman", 1.0), ("smit", 0.3)):
        for fold in (1, 2, 3):
            probs[method, fold] = 1 / (1 + np.exp(-(signal * labels * 2 + rng.normal(size=30))))
            _fake_run(
                tmp_path / "runs" / method / f"fold{fold}", method, fold, keys, labels, probs[method, fold]
            )
    written = write_classification_summary([tmp_path / "runs"], tmp_path / "out", n_bootstrap=100)
    results = pd.read_csv(written["results"])
    assert len(results) == 6 and set(results["method"]) == {"dagman", "smit"}
    summary = pd.read_csv(written["summary"]).set_index("method")
    dagman_aucs = results.loc[results["method"] == "dagman", "auc"]
    assert summary.loc["dagman", "auc_mean"] == pytest.approx(dagman_aucs.mean(), rel=1e-5)
    assert summary.loc["dagman", "auc_sd"] == pytest.approx(dagman_aucs.std(ddof=1), rel=1e-5)
    assert "±" in summary.loc["dagman", "auc_mean_sd"] and summary.loc["dagman", "n_folds"] == 3
    comparisons = pd.read_csv(written["comparisons"])
    assert len(comparisons) == 4 and set(comparisons["method"]) == {"smit"}
    mean_row = comparisons[comparisons["level"] == "fold-mean"].iloc[0]
    smit_mean = np.mean([probs["smit", f] for f in (1, 2, 3)], axis=0)
    dagman_mean = np.mean([probs["dagman", f] for f in (1, 2, 3)], axis=0)
    expected = delong_test(labels, smit_mean, dagman_mean)
    assert mean_row["delong_p"] == pytest.approx(expected.p_value, rel=1e-4)
    assert mean_row["auc_diff"] == pytest.approx(expected.difference, rel=1e-4)
