"""Shell completion works end to end: the script `edgedeploy completion bash` prints, sourced into
a real bash, completes commands, target aliases from the manifest, boards and zoo models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).with_name("edgedeploy"))
MANIFEST = ("name: x\nmodel: m.onnx\ntargets:\n  jetson: {board: jetson-tx2}\n"
            "  rpi4: {board: rpi4}\n")


def _script(shell: str) -> str:
    res = subprocess.run([EXE, "completion", shell], capture_output=True, text=True, check=True)
    return res.stdout


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    """What bash offers for TAB after ``words`` (the last word is the one being completed)."""
    script = cwd / "complete.bash"
    script.write_text(_script("bash"))
    words_arr = " ".join(f"'{w}'" for w in words)
    prog = f"""source {script}
COMP_WORDS=({words_arr}); COMP_CWORD={len(words) - 1}
_edgedeploy_completion {EXE}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{Path(EXE).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "--norc", "-c", prog], cwd=cwd, capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_aliases_boards_and_zoo_models(tmp_path: Path) -> None:
    (tmp_path / "edgedeploy.yaml").write_text(MANIFEST)
    assert "push" in _bash_complete(["edgedeploy", "pu"], tmp_path)
    assert _bash_complete(["edgedeploy", "push", "--ta"], tmp_path) == ["--target"]
    offered = _bash_complete(["edgedeploy", "push", "--target", "j"], tmp_path)
    assert offered[0] == "jetson" and "jetson-tx2" in offered  # the alias, then boards
    assert _bash_complete(["edgedeploy", "status", "-t", "rp"], tmp_path)[0] == "rpi4"
    assert set(_bash_complete(["edgedeploy", "zoo", "export", "res"], tmp_path)) \
        == {"resnet18", "resnet50"}
    assert "rpi5" in _bash_complete(["edgedeploy", "targets", "show", "rp"], tmp_path)
    # a manifest named first on the line, as `plan` takes it, gives its aliases too
    (tmp_path / "other.yaml").write_text(MANIFEST.replace("jetson:", "jetty:"))
    assert _bash_complete(["edgedeploy", "push", "other.yaml", "--target", "jet"],
                          tmp_path)[0] == "jetty"


def test_a_manifest_that_does_not_parse_still_completes_boards(tmp_path: Path) -> None:
    (tmp_path / "edgedeploy.yaml").write_text("targets: [unclosed\n")
    env = {**os.environ, "COMP_WORDS": "edgedeploy push --target rpi", "COMP_CWORD": "3",
           "_EDGEDEPLOY_COMPLETE": "complete_bash"}
    res = subprocess.run([EXE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "rpi4" in res.stdout.split()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_get_answers_from_the_program(shell: str, tmp_path: Path) -> None:
    assert "_EDGEDEPLOY_COMPLETE" in _script(shell)
    env = {**os.environ, "_TYPER_COMPLETE_ARGS": "edgedeploy zoo export mobile",
           "_EDGEDEPLOY_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    res = subprocess.run([EXE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "mobilenet_v2" in res.stdout


def test_an_unknown_shell_is_a_usage_error(capsys) -> None:
    from edgedeploy.cli.main import main

    assert main(["completion", "tcsh"]) == 2
    assert "bash, zsh, fish" in capsys.readouterr().err
