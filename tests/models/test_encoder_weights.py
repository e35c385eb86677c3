"""Tests of encoder export and strict loading into MONAI's SwinUNETR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR

from dagman.models.network import DagmanNetwork
from dagman.models.weights import (
    export_encoder,
    load_encoder,
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


# ---------------------------------------------------------------------------- load_encoder (the one loader)

VIT = dict(patch_size=8, embed_dim=24, depth=2, num_heads=2)


def _small(backbone: str = "swin", sa_stage: int | None = 3, img_size=32) -> DagmanNetwork:
    torch.manual_seed(0)
    kwargs = SWIN if backbone == "swin" else VIT
    net = DagmanNetwork(
        backbone,
        img_size=img_size,
        sa_stage=sa_stage,
        out_dim=16,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        backbone_kwargs=kwargs,
    )
    return net.eval()


def test_export_records_the_pretraining_crop(tmp_path: Path) -> None:
    """encoder_config.json holds input_size: the network's img_size by default, or the one given."""
    net = _small(img_size=(32, 64, 32))
    config = json.loads(export_encoder(net, tmp_path / "a" / "encoder.pt")["config"].read_text())
    assert config["input_size"] == [32, 64, 32]
    config = json.loads(
        export_encoder(net, tmp_path / "b" / "encoder.pt", input_size=64)["config"].read_text()
    )
    assert config["input_size"] == [64, 64, 64]


def test_swin_without_sa_round_trips_with_its_recorded_input_size(tmp_path: Path) -> None:
    """A SMIT-like export (Swin, no SA) reloads with the crop it was trained on and gives identical outputs."""
    net = _small(sa_stage=None, img_size=(32, 64, 32))
    export_encoder(net, tmp_path / "smit" / "encoder.pt")
    assert not (tmp_path / "smit" / "encoder_sa.pt").exists()
    loaded = load_encoder(tmp_path / "smit")
    assert (loaded.backbone_name, loaded.sa, loaded.sa_stage) == ("swin", None, None)
    assert loaded.input_size == (32, 64, 32) and loaded.files.method == "smit"
    rebuilt = loaded.network().eval()
    x = torch.rand(2, 1, 32, 64, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = net(x, project=False, reconstruct=False)
        got = rebuilt(x, project=False, reconstruct=False)
    for name in ("cls", "global_avg", "stage_tokens"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.token_grid == want.token_grid == (4, 8, 4)


@pytest.mark.parametrize(("backbone", "sa_stage"), [("swin", 3), ("vit", None)])
def test_attention_encoders_round_trip(backbone: str, sa_stage: int | None, tmp_path: Path) -> None:
    """Swin with SA and ViT exports reload strictly: same [CLS] and SATT on a fixed input."""
    net = _small(backbone, sa_stage)
    export_encoder(net, tmp_path / "encoder.pt")
    loaded = load_encoder(tmp_path / "encoder.pt")
    assert loaded.input_size == (32, 32, 32) and loaded.sa_stage == sa_stage
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = net(x, project=False, reconstruct=False)
        got = loaded.network().eval()(x, project=False, reconstruct=False)
    assert torch.equal(got.cls, want.cls) and torch.equal(got.satt, want.satt)


def test_exports_without_input_size_derive_it_or_ask_for_it(tmp_path: Path) -> None:
    """Older configs lack input_size: SA and ViT exports derive the crop; a Swin without SA asks for --input-size."""
    for name, net in (
        ("dagman", _small(img_size=64)),
        ("vit", _small("vit", None)),
        ("smit", _small(sa_stage=None)),
    ):
        export_encoder(net, tmp_path / name / "encoder.pt")
        config_path = tmp_path / name / "encoder_config.json"
        config = json.loads(config_path.read_text())
        del config["input_size"]
        config_path.write_text(json.dumps(config))
    assert load_encoder(tmp_path / "dagman").input_size == (64, 64, 64)
    assert load_encoder(tmp_path / "vit").input_size == (32, 32, 32)
    old = load_encoder(tmp_path / "smit")
    assert old.input_size is None
    with pytest.raises(ValueError, match="--input-size"):
        old.network()
    assert old.resolve_input_size(64) == (64, 64, 64)


def test_random_variant_has_the_architecture_and_fresh_weights(
    network: DagmanNetwork, tmp_path: Path
) -> None:
    """weights="random": same keys and shapes, other values, reproducible under a seed; SA alone can be reset."""
    export_encoder(network, tmp_path / "encoder.pt")
    exported = network.encoder_state_dict()
    torch.manual_seed(9)
    first = load_encoder(tmp_path, weights="random")
    torch.manual_seed(9)
    second = load_encoder(tmp_path, weights="random")
    state = first.backbone.swinViT.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in exported.items()}
    assert not torch.equal(
        state["layers1.0.blocks.0.attn.qkv.weight"], exported["layers1.0.blocks.0.attn.qkv.weight"]
    )
    assert all(torch.equal(v, second.backbone.swinViT.state_dict()[k]) for k, v in state.items())
    assert first.sa is not None and first.load_report.startswith("randomly initialised encoder")
    sa_only = load_encoder(tmp_path, sa_weights="random")
    assert all(torch.equal(v, exported[k]) for k, v in sa_only.backbone.swinViT.state_dict().items())
    assert not torch.equal(sa_only.sa.cls_token, network.sa.cls_token)
    assert sa_only.load_report.endswith("SA randomly initialised")


def test_load_encoder_refuses_incomplete_exports(network: DagmanNetwork, tmp_path: Path) -> None:
    """A missing tensor, config or SA file fails naming what is wrong; nothing loads half."""
    export_encoder(network, tmp_path / "encoder.pt")
    state = network.encoder_state_dict()
    gone = sorted(state)[0]
    del state[gone]
    torch.save(state, tmp_path / "encoder.pt")
    with pytest.raises(ValueError, match=rf"missing \(1\): {gone}"):
        load_encoder(tmp_path)
    assert load_encoder(tmp_path, weights="random").sa is not None  # architecture alone needs no weights
    (tmp_path / "encoder_sa.pt").unlink()
    with pytest.raises(FileNotFoundError, match="encoder_sa.pt"):
        load_encoder(tmp_path, weights="random")
    (tmp_path / "encoder_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="encoder_config.json"):
        load_encoder(tmp_path)
    with pytest.raises(ValueError, match="weights must be"):
        load_encoder(tmp_path, weights="scratch")
