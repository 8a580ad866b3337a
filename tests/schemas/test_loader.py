"""Bad manifests: each problem is one paragraph at the right file:line:column, exit code 2."""

from __future__ import annotations

import io
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manifest_helpers import GOOD, write_manifest
from ruamel.yaml import YAML

from edgedeploy.errors import ExitCode, ManifestError, TargetError
from edgedeploy.schemas.loader import load_manifest, load_yaml_model
from edgedeploy.schemas.manifest import Manifest
from edgedeploy.schemas.target import Target

BASE = "name: x\nmodel:\n  path: model.onnx\n"

# (manifest text, line, column, field, words in the message)
CASES = [
    pytest.param(BASE + "pipeline:\n  max_stage: 3\n", 5, 3, "pipeline.max_stage",
                 "unknown key 'max_stage' (did you mean 'max_stages'?)", id="unknown-key"),
    pytest.param(BASE + "objectve: latency\n", 4, 1, "objectve",
                 "did you mean 'objective'?", id="unknown-top-key"),
    pytest.param(BASE + "pipeline:\n  max_stages: four\n", 5, 15, "pipeline.max_stages",
                 "expected an integer, got 'four'", id="wrong-type"),
    pytest.param(BASE + "pipeline:\n  max_stages: 17\n", 5, 15, "pipeline.max_stages",
                 "must be <= 16, got 17", id="above-range"),
    pytest.param(BASE + "constraints:\n  max_power_w: -2.5\n", 5, 16, "constraints.max_power_w",
                 "must be > 0", id="not-positive"),
    pytest.param(BASE + "objective: thruput\n", 4, 12, "objective",
                 "'thruput' is not one of: throughput, latency, energy (did you mean "
                 "'throughput'?)", id="bad-choice"),
    pytest.param("name: x\nmodel:\n  path: missing.onnx\n", 3, 9, "model.path",
                 "model file not found", id="missing-model-file"),
    pytest.param(BASE + "targets:\n  j:\n    board: jetson-tx3\n", 6, 12, "targets.j.board",
                 "unknown board 'jetson-tx3' (did you mean 'jetson-tx2'?)", id="unknown-board"),
    pytest.param(BASE + "targets:\n  j:\n    host: a\n    password: hunter2\n", 7, 5,
                 "targets.j.password", "secrets are not accepted", id="password"),
    pytest.param(BASE + "  input_shape: [1, 3, x, 224]\n", 4, 23, "model.input_shape[2]",
                 "expected an integer, got 'x'", id="list-item"),
    pytest.param(BASE + "targets:\n  j:\n    host: a\n    hosts: [b]\n", 5, 3, "targets.j",
                 "either host or hosts", id="host-and-hosts"),
    pytest.param(BASE + "targets:\n  'a b': {}\n", 5, 3, "targets.a b",
                 "not allowed", id="bad-alias"),
    pytest.param(BASE + "primitives:\n  allow: [winograd_f4x3]\n  deny: [winograd_f4x3]\n", 4, 1,
                 "primitives", "both allow and deny", id="allow-deny"),
    pytest.param("name: x\nobjective: energy\n", 1, 1, "model", "required key missing",
                 id="missing-key"),
    pytest.param("name: x\nmodel:\n  batch: 2\n", 2, 1, "model.path", "required key missing",
                 id="missing-nested-key"),
    pytest.param("name: x\nmodel:\n  path: [a\n", 4, 1, "", "YAML syntax error",
                 id="yaml-syntax"),
    pytest.param("name: x\nmodel:\n\tpath: m.onnx\n", 3, 1, "", "YAML syntax error",
                 id="tab-indent"),
    pytest.param("name: x\nname: y\n", 2, 1, "", "duplicate key", id="duplicate-key"),
    pytest.param("", 1, 1, "", "the file is empty", id="empty"),
    pytest.param("# only a comment\n", 1, 1, "", "the file is empty", id="only-comments"),
    pytest.param("- a\n- b\n", 1, 1, "", "expected a mapping of keys at the top level",
                 id="not-a-mapping"),
    pytest.param("just text\n", 1, 1, "", "expected a mapping", id="scalar"),
    pytest.param("{name: x, model: {path: model.onnx, batch: 0}}\n", 1, 44, "model.batch",
                 "must be >= 1", id="flow-style"),
    pytest.param(BASE + "targets:\n  j:\n    host: nvidia@tx2\n", 6, 11, "targets.j.host",
                 "put the user name in `user:`", id="user-in-host"),
    pytest.param(BASE + "model_path: x\n", 4, 1, "model_path", "unknown key", id="top-unknown"),
]


@pytest.mark.parametrize(("text", "line", "col", "field", "words"), CASES)
def test_bad_manifest_names_file_line_column_and_field(tmp_path: Path, text: str, line: int,
                                                       col: int, field: str, words: str) -> None:
    path = write_manifest(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    exc = info.value
    assert exc.exit_code == ExitCode.BAD_INPUT
    first = str(exc).splitlines()[0]
    prefix = f"{path}:{line}:{col}:" + (f" {field}:" if field else "")
    assert first.startswith(prefix), first
    assert words in str(exc)
    assert "Traceback" not in str(exc)
    assert exc.issues[0]["line"] == line and exc.issues[0]["column"] == col  # type: ignore[attr-defined]


def test_unknown_keys_get_the_allowed_names_as_hint(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, BASE + "pipeline:\n  max_stage: 3\n"))
    assert info.value.hint == "allowed here: max_stages, allow_replication"


def test_unknown_board_hint_lists_the_known_boards(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, BASE + "targets:\n  j: {board: nope}\n"))
    assert "jetson-tx2" in (info.value.hint or "") and "rpi4" in (info.value.hint or "")


def test_passwords_point_to_ssh_agent(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, BASE + "targets:\n  j: {host: a, passphrase: x}\n"))
    assert "ssh-agent" in (info.value.hint or "") and "identity_file" in (info.value.hint or "")


def test_several_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    text = BASE + "objective: fast\npipeline:\n  max_stages: 0\n  replicate: true\n"
    with pytest.raises(ManifestError) as info:
        load_manifest(write_manifest(tmp_path, text))
    lines = [i["line"] for i in info.value.issues]  # type: ignore[attr-defined]
    assert lines == [4, 6, 7]
    assert str(info.value).count(str(tmp_path)) == 3


@pytest.mark.parametrize(("data", "line", "words"), [
    (b"name: x\n\x00\x01\x02", 2, "binary file"),
    (b"name: x\nmodel: \xff\xfe\n", 2, "not UTF-8"),
    (b"\x89PNG\r\n\x1a\n", 1, "not UTF-8"),
    (b"name: x\nmodel: \x07bell\n", 2, "unprintable character"),
])
def test_binary_files_are_refused_at_the_offending_line(tmp_path: Path, data: bytes, line: int,
                                                        words: str) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(data)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value).startswith(f"{path}:{line}:1:")
    assert words in str(info.value)


def test_a_missing_manifest_or_a_folder_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="is a folder"):
        load_manifest(tmp_path)


def test_alias_bombs_and_recursive_aliases_are_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    with pytest.raises(ManifestError, match="expands too much"):
        load_manifest(write_manifest(tmp_path, bomb))
    with pytest.raises(ManifestError):
        load_manifest(write_manifest(tmp_path, "name: &n [*n]\n"))


def test_a_target_file_is_validated_with_the_same_positions(tmp_path: Path) -> None:
    path = tmp_path / "board.yaml"
    path.write_text("name: b\narch: aarch64\nclusters:\n  - name: big\n    core_type: a72\n"
                    "    cpu_ids: [0, 1]\n    max_freq_mhz: 1800\n    flops_per_cycle: 8\n"
                    "    l1d_kib: 32\n    l2_kib: 1024\n    idle_power_w: 0.1\n"
                    "    active_power_w_per_core: 1\n    l2_kb: 3\n"
                    "memory_bw_gbps: 10\ndram_mib: 1024\n")
    with pytest.raises(TargetError) as info:
        load_yaml_model(path, Target, TargetError)
    assert str(info.value).startswith(f"{path}:13:5: clusters[0].l2_kb: unknown key 'l2_kb' "
                                      "(did you mean 'l2_kib'?)")


# ---- fuzzing: a valid Manifest or a clean ManifestError, never anything else -------------------

_VOCAB = ["name", "model", "path", "format", "objective", "targets", "board", "host", "hosts",
          "pipeline", "max_stages", "constraints", "max_latency_ms", "primitives", "allow", "deny",
          "refine", "output", "batch", "input_shape", "model.onnx", "local", "jetson-tx2", "ssh",
          "transport", "identity_file", "password", "1", "-1", "0.5", "null", "true", "~"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=True), st.text(max_size=20), st.sampled_from(_VOCAB))
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(_VOCAB) | st.text(max_size=8),
                                               children, max_size=5)),
    max_leaves=20)


def _check(path: Path) -> None:
    try:
        result = load_manifest(path)
    except ManifestError as exc:
        assert str(exc).strip(), "empty error message"
        assert str(path) in str(exc) or "board" in str(exc)
        return
    assert isinstance(result, Manifest)


_FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_random_bytes_never_escape_as_other_exceptions(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    (tmp_path / "model.onnx").write_bytes(b"x")
    path.write_bytes(data)
    _check(path)


@_FUZZ
@given(tree=st.dictionaries(st.sampled_from(_VOCAB), _TREES, max_size=6))
def test_fuzz_random_yaml_structures_give_a_manifest_or_a_manifest_error(
        tmp_path: Path, tree: dict) -> None:
    buf = io.StringIO()
    YAML().dump(tree, buf)
    _check(write_manifest(tmp_path, buf.getvalue(), "fuzz.yaml"))


@_FUZZ
@given(data=st.data())
def test_fuzz_mutated_good_manifests_give_a_manifest_or_a_manifest_error(
        tmp_path: Path, data: st.DataObject) -> None:
    text = GOOD
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace-line", "swap"]))
        if op == "insert":
            chunk = data.draw(st.text(alphabet=string.printable + "{}[]&*!|>%@`'\"\t\x00é",
                                      max_size=8))
            text = text[:pos] + chunk + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 12)):]
        else:
            lines = text.splitlines()
            i = data.draw(st.integers(0, len(lines) - 1)) if lines else 0
            if lines and op == "replace-line":
                lines[i] = data.draw(st.sampled_from(_VOCAB)) + ": " + data.draw(
                    st.sampled_from(_VOCAB))
            elif len(lines) > 1:
                j = data.draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines) + "\n"
    _check(write_manifest(tmp_path, text, "fuzz.yaml"))
