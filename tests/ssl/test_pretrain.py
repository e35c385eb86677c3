"""The pretraining engine and ``dagman pretrain``: exact resume after SIGTERM (metrics of every step kept),
no teacher gradients, outputs, strict encoder export, every registry method, falling loss, refused mismatched
checkpoints and ``--restart-stale``, TensorBoard scalars, settings parsing.

Everything runs a tiny Swin (embed 12, depths (2, 2, 2, 2), one head per stage) on 32^3 crops of a synthetic
cache, with one torch thread (two threads on two busy cores are several times slower than one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dagman.ssl import pretrain_cli
from dagman.ssl.checkpoint import load_checkpoint
from dagman.ssl.methods import list_methods
from dagman.ssl.pretrain import EXIT_INTERRUPTED, RUN_FILES, StepInfo, TrainingInterrupted, pretrain
from dagman.ssl.settings import PretrainSettings

TINY = {
    "crop_size": [32, 32, 32],
    "batch_size": 2,
    "num_workers": 0,
    "epochs": 2,
    "steps_per_epoch": 3,
    "warmup_epochs": 0.5,
    "teacher_temp_warmup_epochs": 1,
    "embed_dim": 12,
    "depths": [2, 2, 2, 2],
    "num_heads": [1, 1, 1, 1],
    "vit_embed_dim": 24,
    "vit_depth": 2,
    "vit_num_heads": 2,
    "vit_patch_size": 8,
    "out_dim": 64,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "checkpoint_every": 2,
    "tensorboard": False,
}


def write_cache(folder: Path, n: int, seed: int = 0) -> Path:
    """A cache like `dagman resample` writes: float16 (z, y, x) arrays in [0, 1] and index.csv."""
    (folder / "arrays").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:40, 0:48, 0:48]
    rows = []
    for i in range(n):
        centre, radius = rng.uniform(12, 30, 3), rng.uniform(6, 12)
        body = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < radius**2
        volume = 0.8 * body + 0.1 * rng.random(body.shape)
        name = f"arrays/case-{i:02d}__s{i:02d}.npy"
        np.save(folder / name, volume.astype(np.float16))
        rows.append(
            {
                "case_id": f"case-{i:02d}",
                "series_id": f"s{i:02d}",
                "image": "",
                "array": name,
                "size_x": 48,
                "size_y": 48,
                "size_z": 40,
                "spacing": 2.0,
                "origin_x": 0.0,
                "origin_y": 0.0,
                "origin_z": 0.0,
                "window_low": -175.0,
                "window_high": 250.0,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: much faster than two on the shared two-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache"), 6)


@pytest.fixture(scope="module")
def full_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 6-step DAGMaN run, recording the teacher's gradient state after every step."""
    out = tmp_path_factory.mktemp("full")
    teacher_checks: list[bool] = []

    def check(info: StepInfo) -> None:
        teacher_checks.append(
            all(p.grad is None and not p.requires_grad for p in info.teacher.parameters())
            and any(p.grad is not None for p in info.student.parameters())
        )

    torch.set_num_threads(1)
    summary = pretrain("dagman", [cache], out, PretrainSettings.from_dict(TINY), on_step=check)
    return {"out": out, "summary": summary, "teacher_checks": teacher_checks}


def test_teacher_never_receives_gradients(full_run: dict) -> None:
    """After every step the student has gradients and the teacher none (EMA only, requires_grad off)."""
    assert full_run["teacher_checks"] == [True] * 6


def test_outputs_metrics_and_summary(full_run: dict) -> None:
    """All outputs are written; metrics.csv has one finite row per step with every enabled loss and ln K."""
    out = full_run["out"]
    for name in (
        "checkpoint.pt",
        "metrics.csv",
        "metrics.partial.csv",
        "settings.json",
        "summary.json",
        "encoder.pt",
        "encoder_sa.pt",
        "encoder_config.json",
    ):
        assert (out / name).is_file(), name
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["step"].tolist() == list(range(6))
    assert (out / "metrics.csv").read_bytes() == (out / "metrics.partial.csv").read_bytes()
    for column in (
        "lr",
        "weight_decay",
        "momentum",
        "teacher_temp",
        "loss",
        "amip",
        "ampd",
        "aitd",
        "gitd",
        "ampd_entropy",
        "aitd_entropy",
        "gitd_entropy",
        "ln_k",
        "samples_per_s",
        "data_wait_s",
    ):
        assert np.isfinite(metrics[column]).all(), column
    assert metrics["ln_k"].iloc[0] == pytest.approx(math.log(64))
    assert metrics["momentum"].iloc[-1] == pytest.approx(1.0)  # indexed by the global step
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_step"] == 6 and summary["completed"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["method"]["name"] == "dagman" and settings["settings"]["embed_dim"] == 12
    assert settings["version"]["dagman"]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert (
        ckpt["step"] == 6
        and ckpt["scaler"] is None
        and set(ckpt["losses"]) == {"aitd.center", "gitd.center", "ampd.center"}
    )


def test_encoder_loads_strictly_into_swinunetr(full_run: dict) -> None:
    """encoder.pt is a plain SwinUNETR.swinViT state dict: strict loading succeeds with the run's sizes."""
    from monai.networks.nets import SwinUNETR

    model = SwinUNETR(
        in_channels=1,
        out_channels=2,
        feature_size=12,
        depths=(2, 2, 2, 2),
        num_heads=(1, 1, 1, 1),
        window_size=4,
    )
    state = torch.load(full_run["out"] / "encoder.pt", weights_only=True)
    model.swinViT.load_state_dict(state, strict=True)
    teacher = load_checkpoint(full_run["out"] / "checkpoint.pt")["teacher"]
    assert torch.equal(state["patch_embed.proj.weight"], teacher["backbone.swinViT.patch_embed.proj.weight"])
    # the crop is recorded, so downstream tasks feed the encoder what it was trained on by default
    config = json.loads((full_run["out"] / "encoder_config.json").read_text())
    assert config["input_size"] == TINY["crop_size"]


def test_sigterm_then_rerun_equals_uninterrupted(full_run: dict, cache: Path, tmp_path: Path) -> None:
    """SIGTERM after step 5 (mid data pass, off the checkpoint interval) writes a checkpoint and stops; the rerun
    (with --restart-stale, as the workflow runs it) skips the pass's consumed batches and ends bit-identical to
    the uninterrupted run, its metrics.csv holding every step from 0 although none was published before."""
    settings = PretrainSettings.from_dict(TINY)

    def terminate(info: StepInfo) -> None:
        if info.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 5; rerun the same command to resume"):
        pretrain("dagman", [cache], tmp_path, settings, on_step=terminate)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is handler  # the engine's handler is removed again
    # metrics.csv appears only when a run ends; the running log holds steps 0-4 and survives
    assert not (tmp_path / "metrics.csv").exists()
    assert pd.read_csv(tmp_path / "metrics.partial.csv")["step"].tolist() == list(range(5))
    with (tmp_path / "metrics.partial.csv").open("a") as handle:
        handle.write("5,1,0.0")  # a row cut short by a killed job: dropped on resume (step 5 is retrained)
    summary = pretrain("dagman", [cache], tmp_path, settings, restart_stale=True)
    assert summary["final_step"] == 6
    resumed = load_checkpoint(tmp_path / "checkpoint.pt")
    reference = load_checkpoint(full_run["out"] / "checkpoint.pt")
    for part in ("student", "teacher", "losses"):
        assert resumed[part].keys() == reference[part].keys()
        for key, value in reference[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}.{key}"
    a, b = pd.read_csv(tmp_path / "metrics.csv"), pd.read_csv(full_run["out"] / "metrics.csv")
    assert a["step"].tolist() == list(range(6))
    assert np.array_equal(a["loss"].to_numpy(), b["loss"].to_numpy())
    assert not list(tmp_path.glob("stale-*"))


def test_checkpoint_with_other_settings_is_refused(full_run: dict, cache: Path, tmp_path: Path) -> None:
    """Resuming with another lr or method is refused naming the keys; runtime keys may change."""
    shutil.copy(full_run["out"] / "checkpoint.pt", tmp_path / "checkpoint.pt")
    changed = PretrainSettings.from_dict({**TINY, "lr": 1e-3, "batch_size": 1})
    with pytest.raises(ValueError, match=r"'batch_size'.*'lr'|'lr'.*'batch_size'") as err:
        pretrain("dagman", [cache], tmp_path, changed)
    assert str(tmp_path / "checkpoint.pt") in str(err.value) and "--restart-stale" in str(err.value)
    with pytest.raises(ValueError, match="method 'masking'"):
        pretrain("smit", [cache], tmp_path, PretrainSettings.from_dict(TINY))
    # A finished run with only runtime keys changed is accepted (nothing left to train).
    summary = pretrain(
        "dagman", [cache], tmp_path, PretrainSettings.from_dict({**TINY, "checkpoint_every": 5})
    )
    assert summary["final_step"] == 6
    assert pd.read_csv(tmp_path / "metrics.csv").empty  # nothing trained here, no rows to publish
    assert not list(tmp_path.glob("stale-*"))


def test_restart_stale_moves_old_runs_aside_and_trains_from_zero(
    full_run: dict, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With restart_stale, a checkpoint already at the command's last step, then one of other settings, each
    moves aside with its run's files and training starts from step 0 (the retraining of the finished run
    equals it bit for bit); nothing of the old runs is lost."""
    out = tmp_path / "run"
    shutil.copytree(full_run["out"], out)
    with caplog.at_level("WARNING", logger="dagman.ssl.pretrain"):
        summary = pretrain("dagman", [cache], out, PretrainSettings.from_dict(TINY), restart_stale=True)
    assert summary["final_step"] == 6 and "already at step 6" in caplog.text and "stale-1" in caplog.text
    a, b = pd.read_csv(out / "metrics.csv"), pd.read_csv(full_run["out"] / "metrics.csv")
    assert a["step"].tolist() == list(range(6))
    assert np.array_equal(a["loss"].to_numpy(), b["loss"].to_numpy())
    first = out / "stale-1"
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in full_run["out"].iterdir())
    assert (first / "metrics.csv").read_bytes() == (full_run["out"] / "metrics.csv").read_bytes()
    assert torch.equal(
        torch.load(out / "encoder.pt", weights_only=True)["patch_embed.proj.weight"],
        torch.load(first / "encoder.pt", weights_only=True)["patch_embed.proj.weight"],
    )

    caplog.clear()
    changed = PretrainSettings.from_dict({**TINY, "lr": 1e-3, "max_steps": 2})
    with caplog.at_level("WARNING", logger="dagman.ssl.pretrain"):
        summary = pretrain("dagman", [cache], out, changed, restart_stale=True)
    assert summary["final_step"] == 2 and "setting 'lr'" in caplog.text and "stale-2" in caplog.text
    assert pd.read_csv(out / "metrics.csv")["step"].tolist() == [0, 1]
    assert load_checkpoint(out / "stale-2" / "checkpoint.pt")["step"] == 6
    assert set(RUN_FILES) >= {p.name for p in out.iterdir()} - {"stale-1", "stale-2"}


def test_rows_before_keeps_consecutive_complete_rows(tmp_path: Path) -> None:
    """The resumed log keeps steps 0..start-1 up to the first repeated, missing or cut-short row."""
    from dagman.ssl.pretrain import _rows_before

    path = tmp_path / "m.csv"
    path.write_text("step,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n")
    assert [r["step"] for r in _rows_before(path, 3)] == ["0", "1", "2"]
    assert _rows_before(path, 0) == [] and _rows_before(tmp_path / "none.csv", 3) == []
    path.write_text("step,loss\n0,1.0\n1,0.9\n1,0.9\n2,0.8\n")  # a repeated step
    assert [r["step"] for r in _rows_before(path, 4)] == ["0", "1"]
    path.write_text("step,loss\n0,1.0\n1\n")  # cut short inside its first field
    assert [r["step"] for r in _rows_before(path, 4)] == ["0"]


def test_tensorboard_scalars_follow_a_resume(cache: Path, tmp_path: Path) -> None:
    """With tensorboard on, each step's scalars land in out/tensorboard once, across a resume."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {**TINY, "tensorboard": True, "checkpoint_every": 1}
    pretrain("smit", [cache], tmp_path, PretrainSettings.from_dict({**settings, "max_steps": 1}))
    pretrain("smit", [cache], tmp_path, PretrainSettings.from_dict({**settings, "max_steps": 2}))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == [0, 1]
    logged = pd.read_csv(tmp_path / "metrics.csv")["loss"].tolist()
    assert [e.value for e in loss] == pytest.approx(logged, rel=1e-6)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss stops the run with a clear error before the update; the last good checkpoint stays."""
    import dagman.ssl.pretrain as engine

    pretrain("dagman", [cache], tmp_path, PretrainSettings.from_dict({**TINY, "max_steps": 1}))
    monkeypatch.setattr(engine, "amip_loss", lambda recon, target, mask: recon.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 1.*last good checkpoint is kept"):
        pretrain("dagman", [cache], tmp_path, PretrainSettings.from_dict({**TINY, "max_steps": 2}))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", list(list_methods()))
def test_every_registry_method_runs_one_step(method: str, cache: Path, tmp_path: Path) -> None:
    """Each registry name (methods and sweep variants) trains one finite step and exports its encoder."""
    settings = PretrainSettings.from_dict({**TINY, "max_steps": 1, "batch_size": 1})
    summary = pretrain(method, [cache], tmp_path, settings)
    assert summary["final_step"] == 1 and not summary["completed"]
    spec = list_methods()[method]
    assert set(summary["final_losses"]) >= set(spec.enabled_losses)
    assert all(math.isfinite(v) for v in summary["final_losses"].values())
    assert (tmp_path / "encoder.pt").is_file()


@pytest.mark.slow
def test_dagman_loss_falls(cache: Path, tmp_path: Path) -> None:
    """On a small cache, 30 DAGMaN steps lower the total loss (mean of the last 5 vs the first 5), no NaN.

    In so short a run the teacher's outputs are not yet diverse, so its centred distribution drifts towards
    uniform and the distillation terms rise towards ln K (normal at the start of DINO-style training); the
    total falls through AMIP. Heads wider than the other tests' and a constant teacher temperature keep the
    initial teacher close to that level, as K = 8192 heads are in real runs.
    """
    settings = PretrainSettings.from_dict(
        {
            **TINY,
            "epochs": 10,
            "warmup_epochs": 1,
            "lr": 2e-3,
            "checkpoint_every": 100,
            "out_dim": 256,
            "head_bottleneck_dim": 64,
            "teacher_temp_start": 0.07,
        }
    )
    pretrain("dagman", [cache], tmp_path, settings)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 30 and np.isfinite(metrics.drop(columns=["step", "epoch"]).to_numpy()).all()
    loss, amip = metrics["loss"].to_numpy(), metrics["amip"].to_numpy()
    assert loss[-5:].mean() < 0.95 * loss[:5].mean()
    assert amip[-5:].mean() < 0.5 * amip[:5].mean()
    for name in ("ampd", "aitd", "gitd"):
        assert (metrics[f"{name}_entropy"] <= metrics["ln_k"] + 1e-4).all()


def test_settings_reject_unknown_keys_and_round_trip() -> None:
    """Unknown keys are named; wrong types and fp16 fail; to_dict/from_dict round-trips."""
    with pytest.raises(ValueError, match="unknown pretraining setting.*btach_size.*lrr"):
        PretrainSettings.from_dict({"btach_size": 2, "lrr": 1.0})
    with pytest.raises(ValueError, match="'batch_size' must be an integer"):
        PretrainSettings.from_dict({"batch_size": 2.5})
    with pytest.raises(ValueError, match="fp16"):
        PretrainSettings.from_dict({"precision": "fp16"})
    settings = PretrainSettings.from_dict(TINY)
    assert settings.crop_size == (32, 32, 32)
    assert PretrainSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert all(help_text for _, _, help_text in PretrainSettings.help())


def test_cli_flags_override_settings_and_interrupt_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--settings JSON is read, flags override it, and an interruption becomes exit status 3."""
    import dagman.ssl.pretrain as engine

    seen = {}

    def fake(method, caches, out, settings, restart_stale=False):
        seen.update(method=method, settings=settings, restart_stale=restart_stale)
        raise TrainingInterrupted(4, out / "checkpoint.pt")

    monkeypatch.setattr(engine, "pretrain", fake)
    parser = argparse.ArgumentParser()
    pretrain_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--method",
            "smit",
            "--cache",
            str(tmp_path),
            "--out",
            str(tmp_path),
            "--settings",
            json.dumps({**TINY, "epochs": 5}),
            "--batch-size",
            "3",
            "--crop",
            "64",
            "64",
            "32",
            "--restart-stale",
        ]
    )
    assert pretrain_cli.run(args) == EXIT_INTERRUPTED
    assert seen["method"] == "smit" and seen["settings"].batch_size == 3 and seen["settings"].epochs == 5
    assert seen["restart_stale"] is True
    assert seen["settings"].crop_size == (64, 64, 32)
    bad = parser.parse_args(["--method", "dagman", "--cache", ".", "--out", ".", "--settings", '{"nope": 1}'])
    assert pretrain_cli.run(bad) == 2
    assert pretrain_cli.run(parser.parse_args(["--list-methods"])) == 0
