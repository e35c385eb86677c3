"""Tests of the DAGMaN student/teacher network: output fields, SA placement, no-SA mode, heads, registry."""

from __future__ import annotations

import copy

import pytest
import torch

from dagman.models.network import DagmanNetwork, build_backbone

SWIN = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))
HEADS = dict(out_dim=32, head_hidden_dim=32, head_bottleneck_dim=16)


def tiny(**kwargs) -> DagmanNetwork:
    torch.manual_seed(0)
    options = dict(img_size=32, backbone_kwargs=SWIN, **HEADS)
    options.update(kwargs)
    return DagmanNetwork("swin", **options).eval()


@pytest.fixture(scope="module")
def network() -> DagmanNetwork:
    return tiny()


def test_swin_outputs_have_the_documented_shapes(network: DagmanNetwork) -> None:
    """Default SA at stage 3: 4^3 tokens of width 48 at 32^3, global of width 96, full-size reconstruction."""
    mask = torch.rand(2, 4, 4, 4) < 0.5
    with torch.no_grad():
        out = network(torch.randn(2, 1, 32, 32, 32), mask=mask)
    assert out.token_grid == (4, 4, 4) == network.token_grid((32, 32, 32))
    assert out.cls.shape == (2, 48)
    assert out.satt.shape == (2, 64)
    torch.testing.assert_close(out.satt.sum(1), torch.ones(2))
    assert out.stage_tokens.shape == (2, 64, 48)
    assert out.global_avg.shape == (2, 96)
    assert out.recon.shape == (2, 1, 32, 32, 32)
    assert out.cls_logits.shape == (2, 32)
    assert out.patch_logits.shape == (2, 64, 32)
    assert out.global_logits.shape == (2, 32)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_sa_works_at_every_stage(stage: int) -> None:
    """The placement ablation: SA at stage 1..4, SATT and tokens on that stage's grid."""
    net = tiny(sa_stage=stage)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 32), reconstruct=False)
    side = 32 // 2**stage
    assert out.token_grid == (side,) * 3
    assert out.satt.shape == (1, side**3)
    assert out.cls.shape == out.stage_tokens.shape[::2] == (1, 12 * 2 ** (stage - 1))
    assert out.recon is None


def test_no_sa_uses_the_average_token_as_cls() -> None:
    """dagman-no-sa / smit / ibot: [CLS] is the average stage-3 token and there is no SATT."""
    net = tiny(sa_stage=None)
    assert net.sa is None
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32, 32))
    assert out.satt is None
    torch.testing.assert_close(out.cls, out.stage_tokens.mean(dim=1))
    with pytest.raises(ValueError, match="no semantic-attention"):
        net.sa_state_dict()


def test_sa_tokens_continue_into_the_rest_of_the_network(network: DagmanNetwork) -> None:
    """SA changes what stage 4 sees, but not the stage-3 tokens before it (those feed AMPD)."""
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        with_sa = network(x)
        feats = network.backbone(x)
    torch.testing.assert_close(with_sa.stage_tokens, feats.stages[2].flatten(2).transpose(1, 2))
    assert not torch.allclose(with_sa.global_avg, feats.stages[3].mean(dim=(2, 3, 4)))


def test_teacher_noise_is_deterministic_in_eval_and_changes_outputs(network: DagmanNetwork) -> None:
    """The noisy teacher (eval mode) zeroes the chosen tokens: same drop, same output; no drop, different."""
    x = torch.randn(1, 1, 32, 32, 32)
    drop = torch.rand(1, 16, 16, 16) < 0.7
    with torch.no_grad():
        a = network(x, drop=drop, reconstruct=False)
        b = network(x, drop=drop, reconstruct=False)
        clean = network(x, reconstruct=False)
    torch.testing.assert_close(a.cls_logits, b.cls_logits)
    assert not torch.allclose(a.cls, clean.cls)


def test_head_options() -> None:
    """Shared [CLS]/patch head by default; separate on request; project=False skips all heads."""
    shared, separate = tiny(), tiny(share_patch_head=False)
    assert shared.patch_head is None and separate.patch_head is not None
    with torch.no_grad():
        out = shared(torch.randn(1, 1, 32, 32, 32), project=False, reconstruct=False)
    assert out.cls_logits is None and out.patch_logits is None and out.global_logits is None
    with pytest.raises(ValueError, match="share_patch_head"):
        tiny(sa_stage=2, token_stage=3)


def test_teacher_without_reconstruction_head() -> None:
    """A teacher built without the decoder refuses reconstruct=True and returns recon=None by default."""
    teacher = tiny(recon_head=False)
    assert teacher.recon_head is None
    with torch.no_grad():
        assert teacher(torch.randn(1, 1, 32, 32, 32)).recon is None
    with pytest.raises(ValueError, match="recon_head=False"):
        teacher(torch.randn(1, 1, 32, 32, 32), reconstruct=True)


def test_student_gradients_reach_encoder_sa_heads_and_mask_token(network: DagmanNetwork) -> None:
    """One backward through all four outputs trains the encoder, SA, heads and the mask token."""
    student = copy.deepcopy(network).train()
    out = student(torch.randn(1, 1, 32, 32, 32), mask=torch.rand(1, 4, 4, 4) < 0.5)
    (
        out.recon.abs().mean() + out.cls_logits.mean() + out.patch_logits.mean() + out.global_logits.mean()
    ).backward()
    for name in (
        "backbone.mask_token",
        "backbone.swinViT.layers4.0.downsample.reduction.weight",
        "sa.cls_token",
    ):
        assert student.get_parameter(name).grad is not None, name


def test_config_round_trip_rebuilds_the_same_architecture(network: DagmanNetwork) -> None:
    """from_config(config()) gives the same parameter names and shapes (what checkpoints store)."""
    rebuilt = DagmanNetwork.from_config(network.config())
    shapes = {k: v.shape for k, v in network.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_vit_network_outputs() -> None:
    """ViT methods: [CLS] and SATT from the ViT itself, tokens on the patch grid, full-size reconstruction."""
    torch.manual_seed(0)
    net = DagmanNetwork(
        "vit", img_size=32, backbone_kwargs=dict(patch_size=8, embed_dim=24, depth=2, num_heads=3), **HEADS
    )
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32, 32), mask=torch.rand(2, 4, 4, 4) < 0.5)
    assert out.token_grid == (4, 4, 4)
    assert out.cls.shape == (2, 24) and out.satt.shape == (2, 64) and out.stage_tokens.shape == (2, 64, 24)
    assert out.global_avg.shape == (2, 24) and out.recon.shape == (2, 1, 32, 32, 32)
    assert out.patch_logits.shape == (2, 64, 32)
    assert "pos_embed" in net.encoder_state_dict()


def test_unknown_backbone_lists_the_valid_names() -> None:
    """The registry refuses an unknown name and says which exist."""
    with pytest.raises(ValueError, match="valid names: swin, vit"):
        build_backbone("resnet")
    with pytest.raises(ValueError, match="valid names"):
        DagmanNetwork("convnext")


def test_flat_masks_from_the_ssl_layer_are_placed_on_the_right_grid(network: DagmanNetwork) -> None:
    """(B, N) masks are read on the token grid or the patch grid according to N; other N are refused."""
    x = torch.randn(1, 1, 32, 32, 32)
    token_mask = torch.rand(1, 4, 4, 4) < 0.5
    patch_drop = torch.rand(1, 16, 16, 16) < 0.5
    with torch.no_grad():
        flat = network(x, mask=token_mask.flatten(1), drop=patch_drop.flatten(1), reconstruct=False)
        grid = network(x, mask=token_mask, drop=patch_drop, reconstruct=False)
    torch.testing.assert_close(flat.cls, grid.cls)
    with pytest.raises(ValueError, match="fits neither"):
        network(x, mask=torch.zeros(1, 10, dtype=torch.bool))
