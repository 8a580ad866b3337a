"""Manifest schema: defaults, inference, path resolution and the rules a good manifest obeys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from manifest_helpers import GOOD, write_manifest

from edgedeploy.errors import ManifestError
from edgedeploy.schemas import json_schema
from edgedeploy.schemas.loader import load_manifest
from edgedeploy.schemas.manifest import Manifest


def test_a_good_manifest_loads_with_its_values_and_defaults(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, GOOD))
    assert m.name == "demo"
    assert m.model.format == "onnx"
    assert m.model.input_shape == [1, 3, 224, 224]
    assert m.model.batch == 1
    assert m.objective == "latency"
    assert m.constraints.max_latency_ms == 50 and m.constraints.max_power_w is None
    assert m.pipeline.max_stages == 3 and m.pipeline.allow_replication is True
    assert m.refine.max_evals >= 1
    assert m.source == (tmp_path / "manifest.yaml").resolve()


def test_transport_is_inferred_from_host(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, GOOD))
    assert m.targets["local"].transport == "local" and m.targets["local"].board == "local"
    jetson = m.targets["jetson"]
    assert jetson.transport == "ssh" and jetson.all_hosts == ["jetson.local"]
    assert jetson.host_key_policy == "strict" and jetson.path == "~/edgedeploy"


def test_relative_paths_resolve_against_the_manifest_folder_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "plans"
    sub.mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.tflite").write_bytes(b"x")
    (tmp_path / "id_ed25519").write_text("key")
    path = sub / "m.yaml"
    path.write_text("name: t\nmodel: {path: ../models/net.tflite}\n"
                    "targets:\n  pi: {board: rpi4, host: pi.local, identity_file: ../id_ed25519}\n"
                    "output: {plans_dir: out, build_dir: ../build}\n")
    monkeypatch.chdir("/")
    m = load_manifest(path)
    assert m.model.path == tmp_path / "models" / "net.tflite"
    assert m.model.format == "tflite"
    assert m.targets["pi"].identity_file == tmp_path / "id_ed25519"
    assert m.output.plans_dir == sub / "out"
    assert m.output.build_dir == tmp_path / "build"


def test_output_dirs_default_to_the_manifest_folder(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, "name: a\nmodel: {path: model.onnx}\n"))
    assert m.output.plans_dir == tmp_path
    assert m.output.build_dir == tmp_path / "build"


def test_targets_default_to_this_host(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, "name: a\nmodel: {path: model.onnx}\n"))
    assert list(m.targets) == ["local"]
    assert m.targets["local"].transport == "local"


def test_explicit_format_overrides_an_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "net.bin").write_bytes(b"x")
    m = load_manifest(write_manifest(tmp_path, "name: a\nmodel: {path: net.bin, format: tflite}\n"))
    assert m.model.format == "tflite"


def test_a_fleet_lists_hosts_and_a_board_may_be_a_yaml_path(tmp_path: Path) -> None:
    board = (Path(__file__).parents[2] / "targets" / "rpi4.yaml").read_text()
    (tmp_path / "myboard.yaml").write_text(board)
    m = load_manifest(write_manifest(
        tmp_path, "name: f\nmodel: {path: model.onnx}\ntargets:\n"
                  "  fleet: {board: ./myboard.yaml, hosts: [pi1, pi2], port: 2222}\n"))
    fleet = m.targets["fleet"]
    assert fleet.all_hosts == ["pi1", "pi2"] and fleet.transport == "ssh" and fleet.port == 2222
    assert fleet.board == str(tmp_path / "myboard.yaml")


def test_a_broken_board_file_is_reported_at_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("name: b\narch: sparc\n")
    path = write_manifest(tmp_path, "name: f\nmodel: {path: model.onnx}\n"
                                    "targets:\n  x: {board: b.yaml}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert f"{tmp_path / 'b.yaml'}:2:7: arch:" in str(info.value)


def test_simulated_targets_need_a_board_descriptor(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(
        tmp_path, "name: s\nmodel: {path: model.onnx}\ntargets:\n  twin: {board: jetson-tx2, "
                  "transport: sim}\n"))
    assert m.targets["twin"].transport == "sim"
    with pytest.raises(ManifestError, match="simulated target needs a board"):
        load_manifest(write_manifest(
            tmp_path, "name: s\nmodel: {path: model.onnx}\ntargets:\n  twin: {transport: sim}\n"))


def test_target_lookup_suggests_the_closest_alias(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, GOOD))
    assert m.target("jetson").board == "jetson-tx2"
    with pytest.raises(ManifestError, match="did you mean 'jetson'"):
        m.target("jetsn")


def test_a_manifest_built_in_python_validates_the_same_rules(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    m = Manifest.model_validate({"name": "p", "model": {"path": str(model)}})
    assert m.source is None and m.model.format == "onnx"
    with pytest.raises(ValueError, match="model file not found"):
        Manifest.model_validate({"name": "p", "model": {"path": str(tmp_path / "nope.onnx")}})


def test_manifest_json_schema_is_draft7_compatible() -> None:
    for which in ("manifest", "target"):
        schema = json_schema(which)
        text = repr(schema)
        assert schema["$schema"].endswith("draft-07/schema#")
        assert "prefixItems" not in text and "$defs" not in text
        refs = _refs(schema)
        assert refs, which
        for ref in refs:  # every reference resolves inside the document
            assert ref.startswith("#/definitions/") and ref.split("/")[-1] in schema["definitions"]
    props = json_schema("manifest")["properties"]
    assert set(props) == set(Manifest.model_fields)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name", ["demo.yaml", "tx2.yaml", "rpi4.yaml"])
def test_example_manifests_validate_once_the_demo_model_exists(tmp_path: Path, name: str) -> None:
    plans = Path(__file__).parents[2] / "plans"
    (tmp_path / "plans").mkdir()
    (tmp_path / "demo-out").mkdir()
    (tmp_path / "demo-out" / "mobilenet_v2.onnx").write_bytes(b"x")
    copy = tmp_path / "plans" / name
    copy.write_text((plans / name).read_text())
    m = load_manifest(copy)
    assert m.model.path == tmp_path / "demo-out" / "mobilenet_v2.onnx"
    assert all(ref.transport in ("local", "ssh") for ref in m.targets.values())
    assert os.path.isabs(m.output.build_dir)


def test_shorthands_a_model_path_string_and_an_empty_target(tmp_path: Path) -> None:
    m = load_manifest(write_manifest(tmp_path, "name: s\nmodel: model.onnx\ntargets:\n  here:\n"))
    assert m.model.path == tmp_path / "model.onnx"
    assert m.targets["here"].board == "local" and m.targets["here"].transport == "local"
