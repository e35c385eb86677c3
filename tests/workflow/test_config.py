"""The workflow's config is validated before any job runs, and a bad key fails with its name."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _dry_run(repo: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *SNAKEMAKE,
            "-n",
            "--quiet",
            "rules",
            "--configfile",
            str(config),
            "--directory",
            str(config.parent),
            "--snakefile",
            str(repo / "workflow" / "Snakefile"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def demo_config(repo_root, tmp_path) -> dict:
    (tmp_path / "config").mkdir()
    return yaml.safe_load((repo_root / "config" / "config.yaml").read_text())


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config" / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_plan(repo_root, tmp_path, name):
    """Both shipped configs validate and give a plan (the paper's data roots are placeholders)."""
    (tmp_path / "config").mkdir()
    shutil.copy(repo_root / "config" / name, tmp_path / "config" / name)
    proc = _dry_run(repo_root, tmp_path / "config" / name)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_misspelled_key_fails_with_its_name(repo_root, tmp_path, demo_config):
    demo_config["preprocess"]["spacnig"] = 2.0
    proc = _dry_run(repo_root, _write(tmp_path, demo_config))
    assert proc.returncode != 0
    assert "spacnig" in proc.stdout + proc.stderr


def test_bad_value_fails_with_its_key(repo_root, tmp_path, demo_config):
    demo_config["preprocess"]["spacing"] = -1
    proc = _dry_run(repo_root, _write(tmp_path, demo_config))
    assert proc.returncode != 0
    assert "spacing" in proc.stdout + proc.stderr


def test_demo_dataset_without_demo_fails(repo_root, tmp_path, demo_config):
    demo_config["demo"]["enabled"] = False
    proc = _dry_run(repo_root, _write(tmp_path, demo_config))
    assert proc.returncode != 0
    assert "datasets.chest.demo" in proc.stdout + proc.stderr


def test_variants_plan_their_own_runs(repo_root, tmp_path, demo_config):
    """A pretraining variant trains its registry method on its own datasets; a classification variant fine-tunes
    an existing encoder with its own settings; both are listed like methods."""
    demo_config["pretrain"]["variants"] = {"dagman-chest-only": {"method": "dagman", "datasets": ["chest"]}}
    demo_config["classification"]["variants"] = {
        "dagman-pooled": {"method": "dagman", "settings": {"embedding": "pooled"}}
    }
    demo_config["classification"]["methods"] += ["dagman-chest-only", "dagman-pooled"]
    config = _write(tmp_path, demo_config)
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "-n",
            "-p",
            "--configfile",
            str(config),
            "--directory",
            str(config.parent),
            "--snakefile",
            str(repo_root / "workflow" / "Snakefile"),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    variant = next(
        line for line in out.splitlines() if "--out results/demo/pretrain/dagman-chest-only" in line
    )
    assert "--method dagman " in variant and "cache/chest " in variant and "cache/lidc" not in variant
    pooled = [line for line in out.splitlines() if "--method dagman-pooled" in line]
    assert pooled and all("--encoder results/demo/pretrain/dagman " in line for line in pooled)
    assert all('"embedding": "pooled"' in line for line in pooled)


def test_variant_of_unknown_method_fails_with_its_key(repo_root, tmp_path, demo_config):
    demo_config["pretrain"]["variants"] = {"dagman-x": {"method": "dagmann"}}
    proc = _dry_run(repo_root, _write(tmp_path, demo_config))
    assert proc.returncode != 0
    assert "pretrain.methods / method_settings / variants" in proc.stdout + proc.stderr
