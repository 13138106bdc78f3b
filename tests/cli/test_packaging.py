"""README, CI script and packaging agree with each other and with the code.

The README's links, named files and config example: tests/cli/test_docs.py.
"""

import pathlib
import re
from importlib import metadata

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_quick_start_has_install_and_test_lines():
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", section, re.DOTALL).group(1)
    lines = block.strip().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith('pip install -e ".[test]" && ')


def test_ci_runs_the_readme_test_command():
    section = README.split("## Quick start", 1)[1]
    test_command = re.search(r"```\w*\n.*?\n(.*?)\n```", section, re.DOTALL).group(1)
    test_command = test_command.split(" && ", 1)[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert test_command in ci.splitlines()


def test_console_scripts_point_at_main_functions():
    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts")
               if ep.value.startswith("sfg_app.cli.")}
    assert sorted(scripts) == ["sfg_eval", "sfg_export", "sfg_groups", "sfg_infer", "sfg_plan",
                               "sfg_train"]
    for entry_point in scripts.values():
        assert callable(entry_point.load())
