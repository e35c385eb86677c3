"""The `dagman` command: every registered stage exists and explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dagman.cli import COMMANDS, main


def test_top_level_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_stage_names_the_valid_ones(capsys):
    assert main(["no-such-stage"]) == 2
    assert "valid stages" in capsys.readouterr().err


@pytest.mark.parametrize("stage", sorted(COMMANDS))
def test_every_stage_has_help(stage):
    """Each stage module imports cheaply and has a --help (run in a fresh process, as a user would)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dagman.cli", stage, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert f"dagman {stage}" in proc.stdout


def test_settings_arg_reads_inline_json_and_files(tmp_path):
    """Every stage's --settings takes an inline JSON object (as the workflow passes it) or a JSON file."""
    from dagman.cli import read_settings_arg

    path = tmp_path / "settings.json"
    path.write_text('{"epochs": 3}')
    assert read_settings_arg('{"epochs": 3}') == read_settings_arg(str(path)) == {"epochs": 3}
    assert read_settings_arg(None) == {}
    for bad, reason in (("missing.json", "neither"), ("{oops", "not valid JSON"), ("[1]", "neither")):
        with pytest.raises(ValueError, match=reason):
            read_settings_arg(bad)
