"""The reference is generated from the schema, and the committed docs match it."""

import pathlib
import subprocess
import sys

from sfg_app.config import reference_markdown, reference_text
from sfg_app.config import schema

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_reference_lists_every_key_with_its_default():
    text = reference_text()
    for section in schema.all_schemas():
        assert f"\n[{section.title}]\n" in text
        for spec in section.keys.values():
            assert f"\n  {spec.name} " in text
    assert "\n  max_iter = 10000\n" in text
    assert "\n  model_dir (required)\n" in text
    assert "(default: <model_dir>/dataset_split.csv)" in text


def test_every_key_has_a_doc():
    for section in schema.all_schemas():
        for spec in section.keys.values():
            assert spec.doc.endswith("."), f"[{section.title}] {spec.name}"


def test_committed_reference_is_fresh():
    committed = (ROOT / "docs" / "config_reference.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/config_reference.md is stale: run python scripts/make_config_reference.py")


def test_script_check_mode():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_config_reference.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
