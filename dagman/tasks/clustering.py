"""Task 4, organ clustering (DESIGN 4; EXPERIMENTS D4): embeddings, 2-D UMAP, intra- and inter-cluster distances.

Distances follow the preprint (Table I, "computed using the Euclidean distance") and are computed in the 2-D
UMAP space, where the paper's values (1-6 units) live:

- intra-cluster distance of a class: the mean Euclidean distance of its points to the class centroid; reported
  as mean ± sd over classes;
- inter-cluster distance: the Euclidean distance between two class centroids; mean ± sd over all class pairs.

The sd is the sample standard deviation (ddof=1). The same two numbers are also reported in the embedding
space itself (not comparable across methods of different widths, but independent of UMAP's randomness).
UMAP is seeded (``random_state``), which also makes it single-threaded and so reproducible.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from dagman.io.atomic import atomic_path, write_csv_atomic, write_json_atomic

__all__ = ["ClusterDistances", "cluster_distances", "umap_2d", "run_clustering", "DISTANCE_COLUMNS"]

#: Columns of distances.csv: one row per space ("umap", "embedding").
DISTANCE_COLUMNS: tuple[str, ...] = (
    "method",
    "space",
    "intra_mean",
    "intra_sd",
    "inter_mean",
    "inter_sd",
    "n_classes",
    "n_points",
)


@dataclass
class ClusterDistances:
    """Intra- and inter-cluster distances of labelled points.

    Attributes:
        intra_per_class: class label -> mean distance of its points to its centroid.
        inter_per_pair: "a-b" -> distance between the centroids of classes a < b.
        intra_mean, intra_sd: mean and sample sd of ``intra_per_class`` (sd is 0 for one class).
        inter_mean, inter_sd: mean and sample sd of ``inter_per_pair`` (NaN without a pair).
        n_classes, n_points: how many classes and points went in.
    """

    intra_per_class: dict[int, float]
    inter_per_pair: dict[str, float]
    intra_mean: float
    intra_sd: float
    inter_mean: float
    inter_sd: float
    n_classes: int
    n_points: int


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample sd (0 for a single value, NaN for none)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def cluster_distances(points: np.ndarray, labels: np.ndarray) -> ClusterDistances:
    """Intra-cluster (to the class centroid) and inter-cluster (centroid to centroid) Euclidean distances.

    Args:
        points: (N, K) coordinates (2-D UMAP points or embeddings).
        labels: (N,) integer class labels.

    Returns:
        :class:`ClusterDistances`.
    """
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if points.ndim != 2 or len(points) != len(labels):
        raise ValueError(f"points must be (N, K) with N = {len(labels)} labels, got shape {points.shape}")
    if len(points) == 0:
        raise ValueError("cluster_distances needs at least one point")
    classes = np.unique(labels)
    centroids = np.stack([points[labels == c].mean(axis=0) for c in classes])
    intra = {
        int(c): float(np.linalg.norm(points[labels == c] - centroids[i], axis=1).mean())
        for i, c in enumerate(classes)
    }
    inter = {
        f"{int(classes[i])}-{int(classes[j])}": float(np.linalg.norm(centroids[i] - centroids[j]))
        for i, j in combinations(range(len(classes)), 2)
    }
    intra_mean, intra_sd = _mean_sd(np.array(list(intra.values())))
    inter_mean, inter_sd = _mean_sd(np.array(list(inter.values())))
    return ClusterDistances(
        intra_per_class=intra,
        inter_per_pair=inter,
        intra_mean=intra_mean,
        intra_sd=intra_sd,
        inter_mean=inter_mean,
        inter_sd=inter_sd,
        n_classes=len(classes),
        n_points=len(points),
    )


def umap_2d(
    embeddings: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1
) -> np.ndarray:
    """Seeded 2-D UMAP of ``embeddings`` (N, C) with umap-learn's defaults otherwise (Euclidean metric).

    ``n_neighbors`` is capped at N - 1 so that small demo sets work.
    """
    import umap  # heavy import (numba): only when asked for

    if len(embeddings) < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {len(embeddings)}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), len(embeddings) - 1)),
        min_dist=float(min_dist),
        random_state=int(seed),
        n_jobs=1,  # a seed makes umap-learn single-threaded anyway; saying so avoids its warning
    )
    return np.asarray(reducer.fit_transform(np.asarray(embeddings, dtype=np.float32)), dtype=np.float64)


def run_clustering(
    npz: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str = "test",
    seed: int = 0,
    method: str | None = None,
    input_size: int | None = None,
    kind: str = "auto",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    batch_size: int = 8,
) -> dict[str, ClusterDistances]:
    """Embed one OrganMNIST3D split with a pretrained encoder, UMAP it to 2-D and measure the clusters.

    Writes to ``out_dir``:
        umap.csv        method, index (row in the split), label, organ, x, y
        distances.csv   ``DISTANCE_COLUMNS``, one row for the UMAP space and one for the embedding space
        distances.json  settings, and under "distances" -> space the same numbers plus intra per class (by
                        organ name) and inter per class pair ("a-b" class indices)
        embeddings.npy  (N, C) float32 embeddings, row i = umap.csv's index i

    Args:
        npz: OrganMNIST3D file.
        encoder_dir: pretrained export folder (see :func:`~dagman.tasks.embeddings.load_pretrained_encoder`).
        out_dir: output folder.
        split: "train", "val" or "test".
        seed: UMAP seed.
        method: method name in the outputs (default: the export folder's name).
        input_size: network input side (default: from the export).
        kind: embedding kind, "auto" ([CLS] where present, else pooled), "cls" or "pooled".
        n_neighbors, min_dist: UMAP parameters.
        batch_size: volumes per forward pass.

    Returns:
        ``{"umap": ClusterDistances, "embedding": ClusterDistances}``.
    """
    from dagman.io.organmnist import ORGAN_CLASSES, SPLITS, read_organmnist
    from dagman.tasks.embeddings import embed_volumes, load_pretrained_encoder, resolve_kind

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = read_organmnist(npz)[split]
    if len(data.labels) < 3:
        raise ValueError(
            f"{npz}: the {split} split has {len(data.labels)} volumes; clustering needs 3 or more"
        )
    encoder = load_pretrained_encoder(encoder_dir, input_size=input_size, method=method)
    embeddings = embed_volumes(encoder, data.images, kind=kind, batch_size=batch_size)
    coords = umap_2d(embeddings, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    results = {
        "umap": cluster_distances(coords, data.labels),
        "embedding": cluster_distances(embeddings, data.labels),
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scatter = pd.DataFrame(
        {
            "method": encoder.method,
            "index": np.arange(len(data.labels)),
            "label": data.labels,
            "organ": [ORGAN_CLASSES[int(c)] for c in data.labels],
            "x": coords[:, 0],
            "y": coords[:, 1],
        }
    )
    write_csv_atomic(out / "umap.csv", scatter)
    rows = [
        {"method": encoder.method, "space": space, **{k: getattr(r, k) for k in DISTANCE_COLUMNS[2:]}}
        for space, r in results.items()
    ]
    write_csv_atomic(out / "distances.csv", pd.DataFrame(rows, columns=list(DISTANCE_COLUMNS)))
    summary = {
        "method": encoder.method,
        "npz": str(npz),
        "split": split,
        "seed": seed,
        "embedding_kind": resolve_kind(encoder, kind),
        "input_size": list(encoder.input_size),
        "umap_parameters": {"n_neighbors": n_neighbors, "min_dist": min_dist},
        "distance": "Euclidean; intra = mean distance to the class centroid (mean ± sd over classes); "
        "inter = distance between class centroids (mean ± sd over pairs); sd with ddof=1",
    }
    summary["distances"] = {}
    for space, r in results.items():
        record = asdict(r)
        record["intra_per_class"] = {ORGAN_CLASSES[c]: v for c, v in r.intra_per_class.items()}
        summary["distances"][space] = record
    write_json_atomic(out / "distances.json", summary)
    with atomic_path(out / "embeddings.npy") as tmp:
        np.save(tmp, embeddings.astype(np.float32))
    return results
