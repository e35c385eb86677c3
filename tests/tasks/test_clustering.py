"""Task 4 clustering: distances on hand-placed points, strict encoder loading, and `dagman cluster` end to end."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from dagman.io.organmnist import write_organmnist
from dagman.io.synthetic.organs import synthesize_organmnist
from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import cluster_cli
from dagman.tasks.clustering import DISTANCE_COLUMNS, cluster_distances
from dagman.tasks.embeddings import embed_volumes, load_pretrained_encoder

TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


def _export_tiny(folder, sa_stage=3):
    """A tiny random DAGMaN network (input 32^3) exported as a pretrained encoder folder."""
    torch.manual_seed(0)
    net = DagmanNetwork(
        "swin",
        img_size=32,
        sa_stage=sa_stage,
        out_dim=16,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        backbone_kwargs=TINY,
    )
    export_encoder(net, folder / "encoder.pt")
    return net.eval()


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    (root / "dagman").mkdir()
    (root / "smit").mkdir()
    return {
        "dagman": (root / "dagman", _export_tiny(root / "dagman", 3)),
        "smit": (root / "smit", _export_tiny(root / "smit", None)),
    }


def test_distances_of_hand_placed_points():
    """Intra = mean distance to the class centroid; inter = centroid distances; sd over classes/pairs (ddof=1)."""
    points = np.array(
        [[-1, 0], [1, 0], [3, 2], [3, 6], [6, 5], [6, 11]], dtype=float
    )  # centroids (0,0), (3,4), (6,8); intra 1, 2, 3
    labels = np.array([0, 0, 1, 1, 2, 2])
    d = cluster_distances(points, labels)
    assert d.intra_per_class == {0: 1.0, 1: 2.0, 2: 3.0}
    assert d.inter_per_pair == {"0-1": 5.0, "0-2": 10.0, "1-2": 5.0}
    assert d.intra_mean == pytest.approx(2.0) and d.intra_sd == pytest.approx(1.0)
    assert d.inter_mean == pytest.approx(20 / 3)
    assert d.inter_sd == pytest.approx(math.sqrt(((5 - 20 / 3) ** 2 * 2 + (10 - 20 / 3) ** 2) / 2))
    assert (d.n_classes, d.n_points) == (3, 6)


def test_distances_in_higher_dimensions_and_single_class():
    """Works for any width; one class gives sd 0 and no pair (NaN inter)."""
    d = cluster_distances(np.array([[0, 0, 2.0], [0, 0, -2.0]]), np.array([4, 4]))
    assert d.intra_per_class == {4: 2.0} and d.intra_sd == 0.0
    assert math.isnan(d.inter_mean)
    with pytest.raises(ValueError, match="points must be"):
        cluster_distances(np.zeros((3, 2)), np.zeros(2))


def test_loaded_encoder_reproduces_the_exported_network(encoders):
    """Strict reload gives the same [CLS] (SA) and pooled (no SA) embeddings as the network that was exported."""
    volumes = (np.random.default_rng(0).random((2, 28, 28, 28)) * 255).astype(np.uint8)
    x = torch.nn.functional.interpolate(
        torch.from_numpy(volumes / 255.0).float()[:, None], size=(32, 32, 32), mode="trilinear"
    )
    for name, kind in (("dagman", "cls"), ("smit", "pooled")):
        folder, net = encoders[name]
        encoder = load_pretrained_encoder(folder)  # both exports record their crop, SMIT's included
        assert encoder.input_size == (32, 32, 32) and encoder.method == name
        got = embed_volumes(encoder, volumes, progress=False)
        with torch.no_grad():
            out = net(x, project=False, reconstruct=False)
        want = out.cls if kind == "cls" else out.global_avg
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_old_swin_export_without_sa_needs_an_input_size(encoders, tmp_path):
    """A Swin export without SA from before the crop was recorded: loading fails naming the option."""
    for name in ("encoder.pt", "encoder_config.json"):
        (tmp_path / name).write_bytes((encoders["smit"][0] / name).read_bytes())
    config = json.loads((tmp_path / "encoder_config.json").read_text())
    del config["input_size"]
    (tmp_path / "encoder_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="input-size"):
        load_pretrained_encoder(tmp_path)
    assert load_pretrained_encoder(tmp_path, input_size=64).input_size == (64, 64, 64)


def test_strict_loading_rejects_foreign_weights(encoders, tmp_path):
    """Weights that miss a tensor are refused with the key named, never loaded partially."""
    folder = encoders["dagman"][0]
    for name in ("encoder.pt", "encoder_sa.pt", "encoder_config.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    state = torch.load(tmp_path / "encoder.pt", weights_only=True)
    state.pop(sorted(state)[0])
    torch.save(state, tmp_path / "encoder.pt")
    with pytest.raises(ValueError, match="missing"):
        load_pretrained_encoder(tmp_path)


def test_cluster_cli_end_to_end(encoders, tmp_path, monkeypatch):
    """`dagman cluster` writes umap.csv (one row per volume) and distances.csv/json with both spaces.

    umap-learn's numba compilation takes over 30 s on a 2-core machine, so the 2-D projection is stood in for
    by a seeded linear projection here; the distances and files around it are the real ones.
    """
    from dagman.tasks import clustering

    def project(embeddings, seed=0, **_):
        basis = np.random.default_rng(seed).normal(size=(embeddings.shape[1], 2))
        return embeddings @ basis

    monkeypatch.setattr(clustering, "umap_2d", project)
    npz = write_organmnist(tmp_path / "organmnist3d.npz", synthesize_organmnist(size=28, per_class=2, seed=0))
    parser = argparse.ArgumentParser()
    cluster_cli.add_arguments(parser)
    out = tmp_path / "cluster"
    args = parser.parse_args(
        ["--npz", str(npz), "--encoder", str(encoders["dagman"][0]), "--out", str(out), "--seed", "1"]
    )
    assert cluster_cli.run(args) == 0
    scatter = pd.read_csv(out / "umap.csv")
    assert list(scatter.columns) == ["method", "index", "label", "organ", "x", "y"]
    assert len(scatter) == 22 and set(scatter["label"]) == set(range(11))
    distances = pd.read_csv(out / "distances.csv")
    assert list(distances.columns) == list(DISTANCE_COLUMNS)
    assert distances["space"].tolist() == ["umap", "embedding"]
    umap_row = distances.iloc[0]
    expected = cluster_distances(scatter[["x", "y"]].to_numpy(), scatter["label"].to_numpy())
    assert umap_row["intra_mean"] == pytest.approx(expected.intra_mean)
    assert umap_row["inter_mean"] == pytest.approx(expected.inter_mean)
    summary = json.loads((out / "distances.json").read_text())
    assert summary["embedding_kind"] == "cls"
    assert len(summary["distances"]["umap"]["intra_per_class"]) == 11
    assert np.load(out / "embeddings.npy").shape == (22, 48)
