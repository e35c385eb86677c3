"""Tests of encoder export and strict loading into MONAI's SwinUNETR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR

from dagman.models.network import DagmanNetwork
from dagman.models.weights import (
    export_encoder,
    load_encoder_into_swinunetr,
    load_semantic_attention,
    map_encoder_keys,
    swinunetr_kwargs,
)

SWIN = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


@pytest.fixture(scope="module")
def network() -> DagmanNetwork:
    torch.manual_seed(0)
    return DagmanNetwork(
        "swin", img_size=32, out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8, backbone_kwargs=SWIN
    )


def make_swinunetr(network: DagmanNetwork) -> SwinUNETR:
    torch.manual_seed(1)
    return SwinUNETR(out_channels=2, **swinunetr_kwargs(network)).eval()


def test_encoder_state_dict_loads_strictly_and_gives_identical_features(network: DagmanNetwork) -> None:
    """The exported keys are SwinUNETR.swinViT's; after loading, MONAI's encoder reproduces our stage features."""
    unetr = make_swinunetr(network)
    assert set(network.encoder_state_dict()) == set(unetr.swinViT.state_dict())
    unetr.swinViT.load_state_dict(network.encoder_state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 64, 32)
    with torch.no_grad():
        feats = network.backbone.eval()(x)
        reference = unetr.swinViT(x, normalize=True)
    for ours, theirs in zip([feats.embedding, *feats.merged], reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_export_then_load_from_file(network: DagmanNetwork, tmp_path: Path) -> None:
    """export_encoder writes encoder, SA and config files; the encoder file loads strictly; SA reloads."""
    written = export_encoder(network, tmp_path / "encoder.pt")
    assert written["sa"] == tmp_path / "encoder_sa.pt" and written["config"].is_file()
    unetr = make_swinunetr(network)
    report = load_encoder_into_swinunetr(unetr, written["encoder"])
    assert report.loaded == sorted(unetr.swinViT.state_dict()) and not report.skipped and not report.stripped
    for key, value in network.encoder_state_dict().items():
        assert torch.equal(unetr.swinViT.state_dict()[key], value)
    sa, stage = load_semantic_attention(written["sa"])
    assert stage == 3
    x = torch.randn(1, 48, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(sa(x).satt, network.sa.eval()(x).satt)


def test_missing_key_raises_and_names_it(network: DagmanNetwork, tmp_path: Path) -> None:
    """A checkpoint lacking one encoder tensor is refused, never half-loaded."""
    state = network.encoder_state_dict()
    gone = "layers2.0.blocks.1.mlp.linear1.weight"
    del state[gone]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=rf"missing \(1\): {gone}"):
        load_encoder_into_swinunetr(make_swinunetr(network), tmp_path / "partial.pt")


def test_unexpected_and_mis_shaped_keys_raise(network: DagmanNetwork, tmp_path: Path) -> None:
    """Extra keys and a SwinUNETR built with another window size (different bias tables) are both refused."""
    state = dict(network.encoder_state_dict(), extra=torch.zeros(1))
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected \(1\): extra"):
        load_encoder_into_swinunetr(make_swinunetr(network), tmp_path / "extra.pt")
    torch.save(network.encoder_state_dict(), tmp_path / "enc.pt")
    window7 = SwinUNETR(out_channels=2, **dict(swinunetr_kwargs(network), window_size=7))
    with pytest.raises(ValueError, match="wrong shape"):
        load_encoder_into_swinunetr(window7, tmp_path / "enc.pt")


def test_foreign_prefixes_are_mapped_and_reported(network: DagmanNetwork, tmp_path: Path) -> None:
    """A DDP-wrapped whole-network checkpoint under 'student' loads its encoder; the rest is reported as skipped."""
    whole = {f"module.{k}": v for k, v in network.state_dict().items()}
    torch.save({"student": whole, "step": 3}, tmp_path / "ckpt.pt")
    report = load_encoder_into_swinunetr(make_swinunetr(network), tmp_path / "ckpt.pt")
    assert report.container == "student"
    assert report.stripped == ["module.", "backbone.swinViT."]
    assert "backbone.mask_token" in report.skipped and "sa.cls_token" in report.skipped
    unetr_state = {f"swinViT.{k}": v for k, v in network.encoder_state_dict().items()}
    mapped, report = map_encoder_keys(dict(unetr_state, **{"decoder1.conv.weight": torch.zeros(1)}))
    assert set(mapped) == set(network.encoder_state_dict()) and report.skipped == ["decoder1.conv.weight"]


def test_missing_file_raises(network: DagmanNetwork, tmp_path: Path) -> None:
    """A wrong path fails with FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_encoder_into_swinunetr(make_swinunetr(network), tmp_path / "nope.pt")
