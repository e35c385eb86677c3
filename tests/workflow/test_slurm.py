"""`snakemake --profile slurm` on a real SLURM cluster: the repo's profile submits the mini DAG's chest branch
(DICOM conversion checkpoint, grouped resampling, cache index, pretraining on a GPU when the cluster has one)
through sbatch.

Skipped, with the reason, where no SLURM is reachable. CI starts a one-node cluster for it with
tests/workflow/slurm_ci.sh. The test copies the repo's profile and swaps only the site-specific values
(partition, CPUs, memory, status polling) for the cluster it finds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

INIT_S = 2  # first status check after a submission (the plugin's default is 40 s)


def _skip(reason: str) -> None:
    """Skip, or fail where CI promised a cluster (DAGMAN_REQUIRE_SLURM=1, set by slurm_ci.sh)."""
    if os.environ.get("DAGMAN_REQUIRE_SLURM") == "1":
        pytest.fail(f"DAGMAN_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> dict:
    """The reachable cluster's default partition, its smallest node (CPUs, MB) and whether it has GPUs."""
    if shutil.which("sinfo") is None:
        _skip("no SLURM reachable: `sinfo` is not on PATH (CI starts one: tests/workflow/slurm_ci.sh)")
    try:
        proc = _run("sinfo", "-h", "-o", "%P|%a|%c|%m|%G")
    except subprocess.TimeoutExpired:
        _skip("no SLURM reachable: sinfo got no answer within 30 s")
    if proc.returncode != 0 or not proc.stdout.strip():
        _skip(f"no SLURM reachable: sinfo failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _skip("snakemake-executor-plugin-slurm is not installed")
    rows = [line.split("|") for line in proc.stdout.split()]
    up = [r for r in rows if r[1] == "up"]
    if not up:
        _skip(f"no SLURM partition is up:\n{proc.stdout}")
    default = next((r for r in up if r[0].endswith("*")), up[0])
    partition = default[0].rstrip("*")
    mine = [r for r in up if r[0].rstrip("*") == partition]
    info = {
        "partition": partition,
        "cpus": min(int(r[2].rstrip("+")) for r in mine),
        "mem_mb": min(int(r[3].rstrip("+")) for r in mine),
        "gpus": any("gpu" in r[4] for r in mine),
        "status": "sacct",
    }
    if _run("sacct", "-n", "-X").returncode != 0:
        # no accounting: the plugin must poll squeue, which sees finished jobs only for MinJobAge seconds
        info["status"] = "squeue"
        config = _run("scontrol", "show", "config").stdout
        age = re.search(r"MinJobAge\s*=\s*(\d+)", config)
        if not age or int(age.group(1)) < 3 * INIT_S:
            _skip(f"cluster without accounting and MinJobAge < {3 * INIT_S} s: squeue cannot track jobs")
    return info


def _test_profile(repo: Path, workdir: Path, cluster: dict) -> dict:
    """The repo's profile with this cluster's partition and limits, as workdir/slurm/config.yaml."""
    profile = yaml.safe_load((repo / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    pretrain = profile["set-resources"]["pretrain"]
    assert {"slurm_partition", "cpus_per_gpu"} <= set(pretrain), "GPU jobs need their partition and CPUs"
    profile["default-resources"].update(
        slurm_partition=cluster["partition"], mem_mb=min(1000, cluster["mem_mb"])
    )
    for resources in profile["set-resources"].values():
        resources["slurm_partition"] = cluster["partition"]
        if "cpus_per_gpu" in resources:
            resources["cpus_per_gpu"] = min(resources["cpus_per_gpu"], cluster["cpus"])
    profile.update(
        {
            "cores": min(profile.get("cores", 1), cluster["cpus"]),
            "latency-wait": 5,
            "slurm-init-seconds-before-status-checks": INIT_S,
        }
    )
    if cluster["status"] == "squeue":
        profile["slurm-status-command"] = "squeue"
    (workdir / "slurm").mkdir()
    (workdir / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile))
    return profile


def _snakemake_with_deadline(cmd: list[str], workdir: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run snakemake; past the deadline interrupt it (it then cancels its SLURM jobs) and fail."""
    out = workdir / "snakemake_slurm.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            pytest.fail(f"snakemake --profile slurm took over {timeout} s:\n{out.read_text()[-4000:]}")
    return proc.returncode, out.read_text()


def test_profile_runs_the_chest_branch_through_sbatch(wf, repo_root, tmp_path, cluster):
    workdir = tmp_path / "run"
    workdir.mkdir()
    _test_profile(repo_root, workdir, cluster)
    config = wf.config()
    # the pretraining job asks for a GPU where the cluster has one; the engine still runs on the CPU
    config["pretrain"].update(gpus=int(cluster["gpus"]), mem_mb=min(2000, cluster["mem_mb"]), runtime=30)
    path = wf.write_config(workdir, config)
    # the synthetic DICOM is written locally first: it only feeds the jobs under test
    local = wf.snakemake(workdir, path, "--cores", "2", f"{wf.results}/demo/chest/manifest.csv")
    assert local.returncode == 0, local.stderr[-3000:]

    target = f"{wf.results}/pretrain/dagman/encoder.pt"
    cmd = wf.command(workdir, path, "--profile", "slurm", target)  # found as ./slurm/ from workdir
    start = time.monotonic()
    rc, output = _snakemake_with_deadline(cmd, workdir, wf.env(), timeout=900)
    wall = time.monotonic() - start
    print(f"\nsnakemake --profile slurm ({cluster['partition']}, gpus={int(cluster['gpus'])}): {wall:.0f} s")
    assert rc == 0, output[-5000:]
    assert (workdir / target).is_file()
    assert (workdir / wf.results / "cache" / "chest" / "index.csv").is_file()

    ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert len(ids) >= 4, output[-3000:]  # convert, the resampling group, cache_index, pretrain
    queue = _run("squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%k|%T").stdout
    jobs = {line.split("|")[1]: (line.split("|")[0], line.split("|")[2]) for line in queue.split()}
    assert {state for _, state in jobs.values()} == {"COMPLETED"}, queue
    assert "rule_convert_wildcards_chest" in jobs and "rule_pretrain_wildcards_dagman" in jobs, queue
    assert any("resample" in comment for comment in jobs), f"no grouped resampling job:\n{queue}"
    pretrain = _run("scontrol", "show", "job", "-o", jobs["rule_pretrain_wildcards_dagman"][0]).stdout
    if cluster["gpus"]:
        assert re.search(r"gpu[:=]1\b", pretrain), pretrain
        assert "CpusPerTres=" in pretrain, f"cpus_per_gpu was not applied:\n{pretrain}"
