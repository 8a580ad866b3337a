"""Bundles are deterministic, fully checksummed, and their generated code is clean Python."""

from __future__ import annotations

import hashlib
import json
import py_compile
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.generator.conftest import small_build

from edgedeploy.deploy.bundle import load_bundle
from edgedeploy.generator import build_bundle, write_npz
from edgedeploy.runtime import ir

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_building_twice_gives_byte_identical_bundles(tmp_path: Path) -> None:
    build, graph, model = small_build(tmp_path)
    a = build_bundle(build, graph, model, tmp_path / "a")
    b = build_bundle(build, graph, model, tmp_path / "b")
    assert a.id == b.id
    assert _tree(a.root) == _tree(b.root)
    assert (a.root / "SHA256SUMS").read_bytes() == (b.root / "SHA256SUMS").read_bytes()


def test_rebuilding_into_the_same_folder_replaces_it(tmp_path: Path) -> None:
    build, graph, model = small_build(tmp_path)
    first = build_bundle(build, graph, model, tmp_path / "a")
    (first.root / "stray.txt").write_text("x")
    again = build_bundle(build, graph, model, tmp_path / "a")
    assert not (again.root / "stray.txt").exists() and again.id == first.id


def test_a_non_bundle_folder_is_never_replaced(tmp_path: Path) -> None:
    build, graph, model = small_build(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="not empty"):
        build_bundle(build, graph, model, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_sha256sums_covers_every_file_and_matches(bundle_dir: Path) -> None:
    lines = (bundle_dir / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    assert list(listed) == sorted(listed)
    files = set(_tree(bundle_dir)) - {"SHA256SUMS", "bundle.json"}
    assert set(listed) == files
    for rel, digest in listed.items():
        assert hashlib.sha256((bundle_dir / rel).read_bytes()).hexdigest() == digest
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    sums = (bundle_dir / "SHA256SUMS").read_bytes()
    assert meta["id"] == hashlib.sha256(sums).hexdigest()[:16]
    assert {k: meta[k] for k in ("entry", "health", "python", "family")} == {
        "entry": "run.sh", "health": "health.sh", "python": "python3", "family": "linux"}


def test_the_deployer_accepts_the_bundle(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.entry == "run.sh" and bundle.health == "health.sh"
    assert "onnxruntime" in bundle.requires  # the plan ships an onnxruntime segment


def test_bundle_holds_the_contract_files(bundle_dir: Path) -> None:
    files = set(_tree(bundle_dir))
    for rel in ("run.sh", "health.sh", "main.py", "edgedeploy.env", "edgedeploy-tiny.service",
                "app/config.json", "app/graph.json", "app/weights.npz", "app/reference.npz",
                "app/segments/0.onnx", "runner/edgedeploy/__init__.py",
                "runner/edgedeploy/runtime/runner.py", "runner/edgedeploy/runtime/pipeline.py"):
        assert rel in files, rel
    runtime = [f for f in files if f.startswith("runner/")]
    assert all(f.endswith(".py") and "__pycache__" not in f for f in runtime)
    config = json.loads((bundle_dir / "app/config.json").read_text())
    assert sorted(config["plans"]) == ["plan0", "plan1"] and config["active"] == "plan0"
    assert "EnvironmentFile=" in (bundle_dir / "edgedeploy-tiny.service").read_text()


def test_weights_npz_is_timestamp_free_and_loads_as_the_graph(bundle_dir: Path) -> None:
    with zipfile.ZipFile(bundle_dir / "app/weights.npz") as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    graph = ir.Graph.load(bundle_dir / "app")
    assert graph.weights and all(k in graph.weights for layer in graph.layers
                                 for k in layer.weights.values())


def test_write_npz_round_trips_arrays(tmp_path: Path) -> None:
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a/x": np.ones(3)}
    write_npz(tmp_path / "w.npz", arrays)
    with np.load(tmp_path / "w.npz") as npz:
        assert sorted(npz.files) == ["a/x", "b"]
        np.testing.assert_array_equal(npz["b"], arrays["b"])


def test_generated_python_compiles_and_passes_ruff(bundle_dir: Path, tmp_path: Path) -> None:
    py_compile.compile(str(bundle_dir / "main.py"), cfile=str(tmp_path / "main.pyc"), doraise=True)
    ruff = REPO / ".venv" / "bin" / "ruff"
    if not ruff.exists():
        ruff = Path(shutil.which("ruff") or "ruff")
    proc = subprocess.run([str(ruff), "check", "--config", str(REPO / "pyproject.toml"),
                           "--no-cache", str(bundle_dir / "main.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shell_scripts_parse(bundle_dir: Path) -> None:
    for script in ("run.sh", "health.sh"):
        subprocess.run(["sh", "-n", str(bundle_dir / script)], check=True)
        assert (bundle_dir / script).stat().st_mode & 0o111
