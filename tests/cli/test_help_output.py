"""Help and tables read well when piped: flags without a type beside them, command summaries
not cut at 80 columns, table cells whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("edgedeploy"))


def _piped(*args: str) -> str:
    res = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_flags_show_no_bool_type_and_docstrings_are_rewrapped() -> None:
    text = _piped("push", "--help")
    assert "<bool>" not in text
    assert "--no-refine " in text and "--locked " in text
    assert "rolls back to the previous release" in " ".join(text.split())


def test_command_summaries_are_not_cut_when_piped() -> None:
    text = _piped("--help")
    commands = text.split("Commands:", 1)[1]
    assert "..." not in commands
    assert "onnxruntime and its execution providers, LiteRT) and lacks." in text


def test_piped_tables_keep_every_cell_whole() -> None:
    lines = _piped("targets", "list").splitlines()
    header = lines[1].split("\t")
    rows = [line.split("\t") for line in lines[2:]]
    assert rows and all(len(r) == len(header) for r in rows)
    engines = header.index("engines")
    assert any(r[engines].endswith("onnxruntime-tensorrt,litert") for r in rows)
