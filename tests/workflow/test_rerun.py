"""Rerun semantics after a complete run of the mini DAG: only what a change affects is planned again.

The run happens once per session (fixture `mini_run`); every check is a dry run (`snakemake --summary`) except
the last, which retrains one method for real.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

pytestmark = pytest.mark.slow

# the data stages under pretraining and the tasks: no settings change below may plan them again
DATA_RULES = {
    "demo_chest",
    "demo_outcome",
    "convert",
    "resample_series",
    "cache_index",
    "outcome_crops",
    "splits",
}
PRETRAIN_METHOD = r"/pretrain/([^/]+)/"
FINETUNE_METHOD = r"/tasks/classification/runs/[^/]+/([^/]+)/"


def _rules(pending: set[tuple[str, str]]) -> set[str]:
    return {rule for rule, _ in pending}


def _methods(pending: set[tuple[str, str]], rule: str, pattern: str) -> set[str]:
    """The method wildcard of the pending outputs of `rule`, read from their paths."""
    return {re.search(pattern, path).group(1) for r, path in pending if r == rule}


def test_complete_run_has_nothing_to_do(wf, mini_run):
    config = mini_run / "config" / "mini.yaml"
    proc = wf.snakemake(mini_run, config, "--cores", "2", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert wf.pending(mini_run, config) == set()


def test_finetune_setting_reruns_no_pretraining(wf, mini_run):
    config = wf.config()
    config["classification"]["settings"]["epochs"] += 1
    pending = wf.pending(mini_run, wf.write_config(mini_run, config, "finetune_epochs.yaml"))
    assert {"finetune", "classification_summary"} <= _rules(pending)
    assert not _rules(pending) & (DATA_RULES | {"pretrain"})
    runs = {p for r, p in pending if r == "finetune" and p.endswith("metrics.json")}
    assert len(runs) == len(config["classification"]["methods"]) * config["splits"]["folds"]


def test_one_method_setting_reruns_only_that_method(wf, mini_run):
    config = wf.config()
    config["pretrain"]["method_settings"] = {"smit": {"lr": 0.0005}}
    pending = wf.pending(mini_run, wf.write_config(mini_run, config, "smit_lr.yaml"))
    assert {"pretrain", "finetune", "classification_summary"} <= _rules(pending)
    assert not _rules(pending) & DATA_RULES
    assert _methods(pending, "pretrain", PRETRAIN_METHOD) == {"smit"}
    assert _methods(pending, "finetune", FINETUNE_METHOD) == {"smit"}


def test_shared_pretrain_setting_reruns_every_method(wf, mini_run):
    """The converse, so that the per-method check above is not vacuous."""
    config = wf.config()
    config["pretrain"]["settings"]["lr"] = 0.0005
    pending = wf.pending(mini_run, wf.write_config(mini_run, config, "shared_lr.yaml"))
    assert _methods(pending, "pretrain", PRETRAIN_METHOD) == {"dagman", "smit"}
    assert _methods(pending, "finetune", FINETUNE_METHOD) == {"dagman", "smit"}


def test_package_code_change_reruns_nothing_unless_forced(wf, mini_run):
    """New `dagman` code (every module newer than the results, as a `git pull` leaves them) does not silently
    rerun expensive stages; `--forcerun pretrain` (`-R pretrain`) is how a user asks for it."""
    config = mini_run / "config" / "mini.yaml"
    files = list((wf.snakefile.parents[1] / "dagman").rglob("*.py"))
    before = {p: p.stat().st_mtime_ns for p in files}
    now = time.time_ns()
    try:
        for p in files:
            os.utime(p, ns=(now, now))
        assert wf.pending(mini_run, config) == set()
    finally:
        for p, mtime in before.items():
            # restore only what still carries our stamp: never undo an edit made meanwhile
            if p.exists() and p.stat().st_mtime_ns == now:
                os.utime(p, ns=(mtime, mtime))
    forced = wf.pending(mini_run, config, "--forcerun", "pretrain")
    assert {"pretrain", "finetune", "classification_summary"} <= _rules(forced)
    assert not _rules(forced) & DATA_RULES
    assert _methods(forced, "pretrain", PRETRAIN_METHOD) == {"dagman", "smit"}


def test_changed_method_setting_retrains_from_scratch(wf, mini_run, tmp_path):
    workdir = wf.copy_run(mini_run, tmp_path / "run")
    config = wf.config()
    config["pretrain"]["method_settings"] = {"smit": {"lr": 0.0005}}
    path = wf.write_config(workdir, config, "smit_lr.yaml")
    proc = wf.snakemake(workdir, path, "--cores", "2", f"{wf.results}/pretrain/smit/encoder.pt")
    log = (workdir / wf.logs / "pretrain" / "smit.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    assert "resuming" not in log
    out = workdir / wf.results / "pretrain" / "smit"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["final_step"] == summary["total_steps"]
    assert (out / "metrics.csv").read_text().splitlines()[1].startswith("0,")
