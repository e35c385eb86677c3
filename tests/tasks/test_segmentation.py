"""Tests of Task 2 segmentation: strict encoder loading with a fresh decoder, Dice, splits, a tiny run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from monai.networks.nets import SwinUNETR

from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import segment_cli
from dagman.tasks.segmentation import (
    DICE_COLUMNS,
    SegmentationSettings,
    binary_dice,
    build_segmentation_model,
    read_cases,
    split_cases,
)

SWIN = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))
TINY = dict(feature_size=12, depths=[2, 2, 2, 2], num_heads=[3, 3, 3, 3], drop_path=0.0)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    network = DagmanNetwork(
        "swin", img_size=32, out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8, backbone_kwargs=SWIN
    )
    out = tmp_path_factory.mktemp("pretrain") / "dagman"
    export_encoder(network, out / "encoder.pt")
    return out


def _decoder(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("swinViT.")}


def test_encoder_from_checkpoint_and_decoder_from_seeded_init(encoder_dir: Path) -> None:
    """The SwinUNETR's encoder equals the exported weights (strict load); every other module equals a fresh
    model built with the same seed, so nothing but the encoder comes from pretraining."""
    settings = SegmentationSettings(seed=3, **TINY)
    model, arch, summary = build_segmentation_model(encoder_dir, settings)
    assert arch["window_size"] == 4 and "loaded" in summary
    saved = torch.load(encoder_dir / "encoder.pt", weights_only=True)
    assert set(saved) == set(model.swinViT.state_dict())
    for key, value in model.swinViT.state_dict().items():
        assert torch.equal(value, saved[key]), key
    fresh, _, _ = build_segmentation_model(None, settings, arch_from=encoder_dir)
    random_init = [k for k, v in saved.items() if v.is_floating_point() and v.numel() > 1 and v.std() > 0]
    assert not any(torch.equal(fresh.swinViT.state_dict()[k], saved[k]) for k in random_init)
    for key, value in _decoder(model).items():
        assert torch.equal(value, _decoder(fresh)[key]), key


def test_decoder_of_a_whole_pretrained_swinunetr_is_not_loaded(encoder_dir: Path, tmp_path: Path) -> None:
    """From a whole-SwinUNETR checkpoint only the encoder is taken; the decoder stays the seeded init."""
    torch.manual_seed(99)
    source = SwinUNETR(
        in_channels=1, out_channels=2, feature_size=12, depths=(2,) * 4, num_heads=(3,) * 4, window_size=4
    )
    torch.save(source.state_dict(), tmp_path / "whole.pt")
    (tmp_path / "whole_config.json").write_text((encoder_dir / "encoder_config.json").read_text())
    settings = SegmentationSettings(seed=3, **TINY)
    model, _, summary = build_segmentation_model(tmp_path / "whole.pt", settings)
    assert "stripped prefixes: 'swinViT.'" in summary
    for key, value in source.swinViT.state_dict().items():
        assert torch.equal(model.swinViT.state_dict()[key], value)
    fresh, _, _ = build_segmentation_model(None, settings, arch_from=encoder_dir)
    source_decoder = _decoder(source)
    for key, value in _decoder(model).items():
        assert torch.equal(value, _decoder(fresh)[key])
        if value.numel() > 1 and value.is_floating_point() and value.std() > 0:
            assert not torch.equal(value, source_decoder[key]), key


def test_binary_dice_on_known_masks() -> None:
    """Dice is 2|A∩B|/(|A|+|B|): half-overlapping cubes give 0.5; empty vs empty 1; empty vs not 0."""
    a = torch.zeros(8, 8, 8)
    b = torch.zeros(8, 8, 8)
    a[0:4, 0:4, 0:4] = 1
    b[2:6, 0:4, 0:4] = 1
    assert binary_dice(a, b) == pytest.approx(0.5)
    assert binary_dice(a, a) == pytest.approx(1.0)
    assert binary_dice(torch.zeros(8, 8, 8), torch.zeros(8, 8, 8)) == pytest.approx(1.0)
    assert binary_dice(torch.zeros(8, 8, 8), b) == pytest.approx(0.0)


def _cases(n: int) -> list[dict[str, str]]:
    return [{"case_id": f"p{i // 2}", "name": f"c{i}", "image": "", "label": ""} for i in range(n)]


def test_split_is_patient_level_seeded_and_nested() -> None:
    """Validation cases do not depend on the fraction; 25 % lies inside 50 % inside 100 %; a patient's
    series never straddle train and validation; the same seed gives the same split."""
    cases = _cases(40)
    splits = {f: split_cases(cases, f, n_val=3, seed=7) for f in (1.0, 0.5, 0.25)}
    vals = {f: {c["name"] for c in s[1]} for f, s in splits.items()}
    assert vals[1.0] == vals[0.5] == vals[0.25] and len({c["case_id"] for c in splits[1.0][1]}) == 3
    trains = {f: {c["case_id"] for c in s[0]} for f, s in splits.items()}
    assert trains[0.25] < trains[0.5] < trains[1.0] and len(trains[1.0]) == 17 and len(trains[0.25]) == 4
    assert not trains[1.0] & {c["case_id"] for c in splits[1.0][1]}
    assert split_cases(cases, 0.5, n_val=3, seed=7) == splits[0.5]
    assert split_cases(cases, 0.5, n_val=3, seed=8) != splits[0.5]


def _write_case(root: Path, name: str, rng: np.random.Generator) -> tuple[str, str]:
    """A 2 mm volume (z 32, y 40, x 48) of lung-like noise with a soft-tissue ball, and its mask."""
    z, y, x = np.mgrid[:32, :40, :48]
    centre = rng.uniform([10, 12, 14], [22, 28, 34])
    ball = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= rng.uniform(4, 7) ** 2
    hu = rng.normal(-800, 40, size=ball.shape)
    hu[ball] = rng.normal(40, 20, size=int(ball.sum()))
    paths = []
    for kind, array in (("images", hu.astype(np.int16)), ("masks", ball.astype(np.uint8))):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        image.SetOrigin((-40.0, 10.0, 5.0))
        (root / kind).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(root / kind / f"{name}.nii.gz"))
        paths.append(f"{kind}/{name}.nii.gz")
    return paths[0], paths[1]


def test_tiny_training_run_writes_dice_csv(encoder_dir: Path, tmp_path: Path) -> None:
    """`dagman segment` trains a few steps from the pretrained encoder, validates, segments whole test
    volumes by sliding window and writes dice.csv and metrics.json (rows without a mask are skipped)."""
    rng = np.random.default_rng(0)
    train_rows = []
    for i in range(4):
        image, mask = _write_case(tmp_path / "train", f"t{i}", rng)
        train_rows.append({"case_id": f"t{i}", "image": image, "mask": mask, "status": "ok", "reason": ""})
    train_rows.append({"case_id": "nogtv", "image": "", "mask": "", "status": "no_gtv", "reason": "no GTV"})
    pd.DataFrame(train_rows).to_csv(tmp_path / "train" / "cases.csv", index=False)
    test_rows = []
    for i in range(2):
        image, mask = _write_case(tmp_path / "test", f"n{i}", rng)
        test_rows.append({"key": f"n{i}", "image": image, "mask": mask})
    pd.DataFrame(test_rows).to_csv(tmp_path / "test" / "seg_test.csv", index=False)
    assert len(read_cases(tmp_path / "train" / "cases.csv")) == 4

    settings = dict(
        TINY,
        patch_size=[64, 32, 32],
        iterations=2,
        val_every=2,
        warmup=1,
        batch_size=1,
        samples_per_volume=1,
        n_val=1,
        sw_overlap=0.0,
        sw_batch_size=4,
        threads=2,
        device="cpu",
    )
    parser = argparse.ArgumentParser()
    segment_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--train",
            str(tmp_path / "train" / "cases.csv"),
            "--test",
            f"lidc={tmp_path / 'test' / 'seg_test.csv'}",
        ]
        + ["--encoder", str(encoder_dir), "--fraction", "0.5", "--out", str(tmp_path / "out")]
        + ["--settings", json.dumps(settings), "--quiet"]
    )
    assert segment_cli.run(args) == 0
    dice = pd.read_csv(tmp_path / "out" / "dice.csv")
    assert tuple(dice.columns) == DICE_COLUMNS
    assert list(dice["test_set"]) == ["lidc", "lidc"] and list(dice["case_id"]) == ["n0", "n1"]
    assert dice["dice"].between(0, 1).all() and (dice["true_voxels"] > 0).all()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_train"] == 2 and metrics["n_val"] == 1 and metrics["best_iteration"] == 2
    assert metrics["test"]["lidc"]["n"] == 2
    assert (tmp_path / "out" / "model.pt").is_file()


def test_bad_settings_are_refused() -> None:
    """Unknown keys and patch sizes SwinUNETR cannot take fail with a message naming them."""
    with pytest.raises(ValueError, match="unknown segmentation settings"):
        SegmentationSettings.from_mapping({"iteratons": 5})
    with pytest.raises(ValueError, match="multiples of 32"):
        SegmentationSettings(patch_size=(32, 32, 32))
