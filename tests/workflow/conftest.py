"""Fixtures for running the workflow on the reduced demo (mini.yaml) in temporary folders.

Snakemake always runs with --directory <tmp> and the repo's Snakefile, so results, logs and .snakemake/ land in
the temporary folder and never in the repo. Tests reach the helpers through the `wf` fixture (conftest modules
cannot be imported by name reliably: tests/ has one too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


class MiniWorkflow:
    """Run the repo's workflow on copies of tests/workflow/mini.yaml."""

    snakefile = REPO / "workflow" / "Snakefile"
    config_path = Path(__file__).with_name("mini.yaml")
    run = "mini"  # mini.yaml's run name
    results = f"results/{run}"
    logs = f"logs/{run}"

    @staticmethod
    def env() -> dict[str, str]:
        """One thread per process (2 shared cores) and this interpreter's `dagman` on PATH for the jobs."""
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    @staticmethod
    def write_config(workdir: Path, config: dict, name: str = "mini.yaml") -> Path:
        path = workdir / "config" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def command(self, workdir: Path, config: Path, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--configfile",
            str(config),
            "--directory",
            str(workdir),
            "--snakefile",
            str(self.snakefile),
            *args,
        ]

    def snakemake(
        self, workdir: Path, config: Path, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(workdir, config, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=workdir,
        )

    def pending(self, workdir: Path, config: Path, *args: str) -> set[tuple[str, str]]:
        """(rule, output path) of every output a run would (re)write, from `snakemake --summary`.

        The summary has one tab-separated row per output file: path, date, rule, log, status, plan; the plan
        is "update pending" for the outputs of jobs that would run.
        """
        proc = self.snakemake(workdir, config, "--cores", "2", "--summary", *args, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [line.split("\t") for line in proc.stdout.splitlines()]
        assert any(r[0] == "output_file" for r in rows), f"no summary table in:\n{proc.stdout[-2000:]}"
        return {(r[2], r[0]) for r in rows if len(r) == 6 and r[5] == "update pending"}

    @staticmethod
    def copy_run(src: Path, dst: Path) -> Path:
        """A private copy of a finished run (file times kept, so Snakemake sees it as up to date)."""
        shutil.copytree(src, dst, symlinks=True)
        return dst


@pytest.fixture(scope="session")
def wf() -> MiniWorkflow:
    return MiniWorkflow()


@pytest.fixture(scope="session")
def mini_run(wf, tmp_path_factory) -> Path:
    """The mini DAG run once to completion; tests that change files there must work on wf.copy_run(...)."""
    workdir = tmp_path_factory.mktemp("mini_run")
    config = wf.write_config(workdir, wf.config())
    proc = wf.snakemake(workdir, config, "--cores", "2", timeout=900)
    assert proc.returncode == 0, f"mini workflow failed:\n{proc.stderr[-6000:]}"
    return workdir
