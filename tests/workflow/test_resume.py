"""A pretraining job stopped by SIGTERM (what SLURM sends at a time limit) fails with exit status 3, keeps its
checkpoint, and the rerun of the workflow resumes from that checkpoint's step instead of from 0."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

STEPS = 20  # steps_per_epoch 2 x 10 epochs: long enough to interrupt after the first checkpoint (step 2)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pretrain_process(root: int, method: str) -> int | None:
    """The `dagman pretrain --method <method>` Python process under `root` (not the shell that wraps it)."""
    for pid in _descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        names = [Path(a).name for a in argv]
        if "pretrain" in argv and "dagman" in names and method in argv and names[0] not in ("bash", "sh"):
            return pid
    return None


@pytest.fixture(scope="module")
def interrupted_then_resumed(wf, mini_run, tmp_path_factory) -> dict:
    """Train smit afresh on a copy of the mini run, SIGTERM it after its first checkpoint, then rerun."""
    workdir = wf.copy_run(mini_run, tmp_path_factory.mktemp("resume") / "run")
    out = workdir / wf.results / "pretrain" / "smit"
    for path in out.iterdir():
        path.unlink()
    config = wf.config()
    config["pretrain"]["method_settings"] = {"smit": {"epochs": STEPS // 2, "checkpoint_every": 2}}
    path = wf.write_config(workdir, config)
    target = f"{wf.results}/pretrain/smit/encoder.pt"
    log = workdir / wf.logs / "pretrain" / "smit.log"

    first_out = workdir / "first_attempt.txt"
    with first_out.open("w") as sink:
        first = subprocess.Popen(
            wf.command(workdir, path, "--cores", "2", target),
            cwd=workdir,
            env=wf.env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while not (out / "checkpoint.pt").exists():
                assert first.poll() is None, f"snakemake ended before a checkpoint:\n{first_out.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint.pt within 300 s"
                time.sleep(0.05)
            pid = _pretrain_process(first.pid, "smit")
            assert pid is not None, "no `dagman pretrain --method smit` process under snakemake"
            os.kill(pid, signal.SIGTERM)
            first.wait(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
    first_output = first_out.read_text()
    first_log = log.read_text()
    checkpoint_step = int(torch.load(out / "checkpoint.pt", weights_only=True)["step"])

    second = wf.snakemake(workdir, path, "--cores", "2", target)
    return {
        "first_rc": first.returncode,
        "first_output": first_output,
        "first_log": first_log,
        "checkpoint_step": checkpoint_step,
        "second": second,
        "second_log": log.read_text(),
        "out": out,
    }


def test_sigterm_fails_the_job_with_status_3_and_keeps_the_checkpoint(interrupted_then_resumed):
    run = interrupted_then_resumed
    assert run["first_rc"] != 0
    assert "exit status 3" in run["first_output"], run["first_output"][-3000:]
    match = re.search(r"interrupted at step (\d+)", run["first_log"])
    assert match, run["first_log"][-2000:]
    assert int(match.group(1)) == run["checkpoint_step"]
    assert 2 <= run["checkpoint_step"] < STEPS


def test_rerun_resumes_from_the_checkpoint_and_completes(interrupted_then_resumed):
    run = interrupted_then_resumed
    assert run["second"].returncode == 0, run["second_log"][-3000:]
    assert re.search(
        rf"resuming smit from \S+ at step {run['checkpoint_step']} of {STEPS}\b", run["second_log"]
    )
    summary = json.loads((run["out"] / "summary.json").read_text())
    assert summary["completed"] and summary["final_step"] == STEPS
    assert (run["out"] / "encoder.pt").is_file()
    with (run["out"] / "metrics.csv").open(newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    # the rerun trained only the remaining steps: its rows start at the checkpoint (or at 0 if the
    # interrupted attempt's rows were kept) and end at the last step, each once
    assert steps and steps[0] in (0, run["checkpoint_step"]) and steps == list(range(steps[0], STEPS))


def test_resumed_metrics_keep_the_steps_before_the_interruption(interrupted_then_resumed):
    with (interrupted_then_resumed["out"] / "metrics.csv").open(newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(STEPS))
