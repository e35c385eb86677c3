"""Distributed setup: device choice, torchrun detection, and two CPU processes training together with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dagman.ssl.distributed import all_gather, all_reduce_sum, resolve_device, setup_distributed, torchrun_env

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def test_resolve_device_and_single_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside torchrun nothing is initialised and the helpers are identities; 'cuda' without GPU fails."""
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert torchrun_env() is None
    ctx = setup_distributed("cpu")
    assert not ctx.distributed and ctx.is_main and ctx.device == torch.device("cpu") and not ctx.owns_group
    t = torch.arange(3.0)
    assert torch.equal(all_reduce_sum(t, ctx), t) and all_gather(t, ctx)[0] is t
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_torchrun_env_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK / LOCAL_RANK / WORLD_SIZE from torchrun are picked up."""
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert torchrun_env() == (3, 1, 4)


@pytest.mark.slow
def test_two_processes_train_together_under_torchrun(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): DDP trains, one output set, identical loss centres on both ranks."""
    cache = tmp_path / "cache"
    (cache / "arrays").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        name = f"arrays/case-{i}__s{i}.npy"
        np.save(cache / name, rng.random((36, 40, 40)).astype(np.float16))
        rows.append({"case_id": f"case-{i}", "series_id": f"s{i}", "array": name})
    pd.DataFrame(rows).to_csv(cache / "index.csv", index=False)
    settings = {
        "crop_size": [32, 32, 32],
        "batch_size": 1,
        "num_workers": 0,
        "epochs": 2,
        "warmup_epochs": 0.5,
        "teacher_temp_warmup_epochs": 1,
        "embed_dim": 12,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 1, 1, 1],
        "out_dim": 64,
        "head_hidden_dim": 32,
        "head_bottleneck_dim": 16,
        "tensorboard": False,
    }
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "dagman.cli",
        "pretrain",
        "--method",
        "dagman",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--settings",
        json.dumps(settings),
        "--device",
        "cpu",
        "--max-steps",
        "3",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["final_step"] == 3 and summary["total_steps"] == 4
    assert summary["center_max_rank_diff"] == 0.0
    resolved = json.loads((out / "settings.json").read_text())
    assert resolved["runtime"]["global_batch"] == 2
    assert len(pd.read_csv(out / "metrics.csv")) == 3
