"""Attention-head diversity: entropy and distance on hand-made attention, MONAI's window layout, and the run."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets.swin_unetr import window_partition

from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import diversity_cli
from dagman.tasks.diversity import (
    DIVERSITY_COLUMNS,
    SUMMARY_COLUMNS,
    attention_distance,
    attention_entropy,
    centred_crop,
    record_swin_attention,
    summarise_heads,
    window_distances,
    window_positions,
)

TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


def _tiny(sa_stage=3):
    torch.manual_seed(0)
    return DagmanNetwork(
        "swin",
        img_size=32,
        sa_stage=sa_stage,
        out_dim=16,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        backbone_kwargs=TINY,
    ).eval()


def test_entropy_of_uniform_and_one_hot_attention():
    """Uniform attention over n keys has entropy ln n per row; one-hot attention has 0."""
    n = 8
    uniform = torch.full((2, 3, n, n), 1.0 / n)
    np.testing.assert_allclose(attention_entropy(uniform).numpy() / (2 * n), [math.log(n)] * 3)
    one_hot = torch.eye(n).expand(2, 3, n, n)
    np.testing.assert_allclose(attention_entropy(one_hot).numpy(), [0.0] * 3, atol=1e-12)


def test_attention_distance_of_hand_made_matrices():
    """Self-attention has distance 0; a query on the opposite corner of a 2^3 window has sqrt(3) * step."""
    d = window_distances((2, 2, 2), step=2.0)
    one_hot = torch.eye(8).reshape(1, 1, 8, 8).clone()
    one_hot[0, 0, 0] = 0.0
    one_hot[0, 0, 0, 7] = 1.0  # query (0,0,0) -> key (1,1,1)
    assert attention_distance(one_hot, d).item() == pytest.approx(2.0 * math.sqrt(3))
    # uniform attention in a 1 x 1 x 2 window: each of the 2 queries sees distance 0 and 1 -> mean 0.5 each
    uniform = torch.full((1, 1, 2, 2), 0.5)
    assert attention_distance(uniform, window_distances((1, 1, 2))).item() == pytest.approx(1.0)


def test_window_positions_follow_monai_window_partition():
    """Token j of a MONAI window sits at window_positions(window)[j] (C order over d, h, w)."""
    window = (2, 3, 4)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s) for s in (4, 6, 8)), indexing="ij"), dim=-1)
    windows = window_partition(grid[None].float(), window)  # (n_windows, n, 3) absolute positions
    local = windows[0].numpy()
    np.testing.assert_array_equal(local, window_positions(window))
    relative = windows[5] - windows[5][0]
    np.testing.assert_array_equal(relative.numpy(), window_positions(window))


def test_uniform_swin_attention_gives_ln_n_and_mean_window_distance():
    """With zero query/key weights and zero position bias MONAI's attention is uniform in unshifted windows.

    Then the hooks must report entropy ln(n) and the mean pairwise distance of the window, scaled by the
    stage's stride, for every head of each stage's first (unshifted) block.
    """
    net = _tiny()
    swin = net.backbone.swinViT
    with torch.no_grad():
        for name, p in swin.named_parameters():
            if "relative_position_bias_table" in name:
                p.zero_()
            elif "attn.qkv" in name:
                p[: 2 * p.shape[0] // 3].zero_()  # q and k rows; v stays
    with record_swin_attention(net.backbone) as stats, torch.no_grad():
        net(torch.rand(2, 1, 32, 32, 32), project=False, reconstruct=False)
    first_blocks = [s for s in stats if s.block == 1]
    # stage grids 16, 8, 4, 2 -> windows 4^3, 4^3, 4^3 and 2^3 (MONAI shrinks windows on small grids)
    for record, window, stride in zip(first_blocks, [(4,) * 3] * 3 + [(2,) * 3], (2, 4, 8, 16), strict=True):
        n = int(np.prod(window))
        grid = 32 // stride
        assert record.rows == 2 * grid**3
        np.testing.assert_allclose(record.entropy.numpy() / record.rows, [math.log(n)] * 3, rtol=1e-6)
        mean_distance = window_distances(window, stride).mean().item()
        np.testing.assert_allclose(record.distance.numpy() / record.rows, [mean_distance] * 3, rtol=1e-6)
    for record in stats:  # shifted blocks see masked (smaller) regions: entropy never above ln(n)
        assert 0.0 <= record.entropy.max().item() / record.rows <= math.log(64) + 1e-6
    assert not any(block.attn.softmax._forward_hooks for block in swin.layers1[0].blocks)


def test_centred_crop_pads_and_centres():
    """A centred crop takes the middle of a larger axis and centres a smaller one in zeros."""
    volume = np.arange(10, dtype=np.float32).reshape(10, 1, 1) * np.ones((1, 2, 6), np.float32)
    crop = centred_crop(volume, (4, 4, 4))
    assert crop[:, 1, 1].tolist() == [3, 4, 5, 6]
    assert crop[0, 0].tolist() == [0, 0, 0, 0] and crop[0, 1].tolist() == [3, 3, 3, 3]


def test_summary_is_mean_and_population_variance_across_heads():
    """Per stage: mean and variance (ddof=0) over every head of every block."""
    table = pd.DataFrame(
        {
            "method": "m",
            "stage": [1, 1, 1, 1, 2],
            "block": [1, 1, 2, 2, 1],
            "head": [1, 2, 1, 2, 1],
            "mean_distance": [1.0, 3.0, 1.0, 3.0, 5.0],
            "mean_distance_mm": [2.0, 6.0, 2.0, 6.0, 10.0],
            "entropy": [0.0, 2.0, 0.0, 2.0, 1.0],
            "n_queries": 1,
        }
    )
    summary = summarise_heads(table)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    first = summary.iloc[0]
    assert (first.n_heads, first.entropy_mean, first.entropy_var) == (4, 1.0, 1.0)
    assert (first.distance_mean, first.distance_var, first.distance_mm_var) == (2.0, 1.0, 4.0)
    assert summary.iloc[1].entropy_var == 0.0


def test_diversity_cli_end_to_end(tmp_path):
    """`dagman attention-diversity` on a tiny cache: one row per stage, block and head, and a stage summary."""
    export_encoder(_tiny(), tmp_path / "dagman" / "encoder.pt")
    cache = tmp_path / "cache"
    (cache / "arrays").mkdir(parents=True)
    rows = []
    for i, shape in enumerate([(40, 36, 36), (20, 30, 50)]):
        np.save(cache / "arrays" / f"c{i}__s.npy", np.random.default_rng(i).random(shape).astype(np.float16))
        rows.append({"case_id": f"c{i}", "series_id": "s", "array": f"arrays/c{i}__s.npy", "spacing": 2.0})
    pd.DataFrame(rows).to_csv(cache / "index.csv", index=False)
    parser = argparse.ArgumentParser()
    diversity_cli.add_arguments(parser)
    out = tmp_path / "div"
    args = parser.parse_args(
        ["--encoder", str(tmp_path / "dagman"), "--index", str(cache / "index.csv"), "--out", str(out)]
    )
    assert diversity_cli.run(args) == 0
    table = pd.read_csv(out / "diversity.csv")
    assert list(table.columns) == list(DIVERSITY_COLUMNS)
    assert len(table) == 4 * 2 * 3 and set(table["method"]) == {"dagman"}
    np.testing.assert_allclose(table["mean_distance_mm"], 2.0 * table["mean_distance"])
    assert (table["entropy"] > 0).all() and (table["entropy"] <= math.log(64) + 1e-6).all()
    summary = pd.read_csv(out / "diversity_summary.csv")
    assert summary["stage"].tolist() == [1, 2, 3, 4] and (summary["n_heads"] == 6).all()
