"""Execution-provider requirements (``provider:<Name>``): doctor asks the board's real onnxruntime,
and a push of a GPU bundle to a board whose onnxruntime cannot run it is refused before upload.

This machine's onnxruntime is the CPU-only build, so CUDAExecutionProvider is genuinely missing
here; the board's Python is this test's interpreter (the one with onnxruntime installed).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from tests.deploy.bundles import make_bundle

from edgedeploy.cli.main import main
from edgedeploy.deploy import api
from edgedeploy.deploy.bundle import BundleError, load_bundle, parse_requirement, write_sums
from edgedeploy.deploy.doctor import doctor, require
from edgedeploy.deploy.local import LocalTransport
from edgedeploy.errors import TargetError

CUDA = "CUDAExecutionProvider"
CUDA_HINT = "install onnxruntime-gpu built for the board's CUDA/JetPack"


@pytest.fixture(scope="module", autouse=True)
def cpu_only_onnxruntime() -> None:
    """These tests need an onnxruntime that imports and lacks CUDA (the CPU-only wheel)."""
    ort = pytest.importorskip("onnxruntime")
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDAExecutionProvider: nothing is missing here")


def _needs_cuda(bundle: Path) -> Path:
    """Make ``bundle`` a GPU bundle whose board Python is this interpreter; re-seal it."""
    meta = json.loads((bundle / "bundle.json").read_text())
    meta.update(python=sys.executable, requires=["numpy", f"provider:{CUDA}"])
    (bundle / "bundle.json").write_text(json.dumps(meta))
    write_sums(bundle)
    return bundle


def test_doctor_lists_the_providers_of_the_boards_onnxruntime(tmp_path, monkeypatch, capsys):
    (report,) = api.doctor("local", python=sys.executable)
    assert report.ok and "CPUExecutionProvider" in (report.providers or [])
    assert CUDA not in (report.providers or [])
    # A push whose bundle needs no provider does not import onnxruntime at all.
    assert doctor(LocalTransport(), sys.executable, ["numpy"]).providers is None
    monkeypatch.chdir(tmp_path)  # no edgedeploy.yaml: target "local" is this host
    assert main(["doctor", "--python", sys.executable, "--json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    assert "CPUExecutionProvider" in host["providers"] and host["providers_error"] is None
    assert main(["doctor", "--python", sys.executable]) == 0
    head, row = capsys.readouterr().out.splitlines()[1:3]
    assert "providers" in head.split("\t") and "CPUExecutionProvider" in row


def test_a_missing_provider_names_what_the_board_offers_and_how_to_get_it():
    report = doctor(LocalTransport(), sys.executable, [f"provider:{CUDA}"])
    offers = ", ".join(report.providers or [])
    assert "CPUExecutionProvider" in offers
    assert report.missing == [f"{CUDA} (the board's onnxruntime offers {offers}; {CUDA_HINT})"]
    with pytest.raises(TargetError) as info:
        require(report, "bundle demo (release 1a2b)")
    assert info.value.exit_code == 2
    assert str(info.value).startswith(
        f"local lacks what this bundle needs (bundle demo (release 1a2b)): {CUDA} (")


def test_a_gpu_bundle_is_refused_before_upload_and_the_running_release_stays(tmp_path, fast):
    board = tmp_path / "board"
    spec = f"local:{board}"
    api.push_bundle(make_bundle(tmp_path, "alpha"), spec, options=fast)
    try:
        result = api.push_bundle(_needs_cuda(make_bundle(tmp_path, "beta")), spec, options=fast,
                                 check=False)
        (host,) = result.hosts
        assert (host.outcome, host.exit_code, host.current) == ("refused", 2, "alpha-0001")
        assert f"lacks what this bundle needs (bundle beta (release beta-0001)): {CUDA} (" \
            in host.message
        assert CUDA_HINT in host.message
        doctor_step = host.steps[-1]
        assert (doctor_step["step"], doctor_step["outcome"]) == ("doctor", "failed")
        assert "CPUExecutionProvider" in doctor_step["detail"]["providers"]
        assert os.readlink(board / "current") == "releases/alpha-0001"
        assert sorted(p.name for p in (board / "releases").iterdir()) == ["alpha-0001"]
        (row,) = api.status(spec)
        assert (row["current"], row["running"], row["alive"]) == ("alpha-0001", "alpha-0001", True)
        with pytest.raises(TargetError, match=CUDA):  # check=True raises the refusal (exit 2)
            api.push_bundle(tmp_path / "beta", spec, options=fast)
    finally:
        api.stop(spec, check=False)


@pytest.mark.ssh
def test_doctor_over_ssh_reports_the_missing_provider(sshd, access):
    (report,) = api.doctor(sshd.target_ref(), access=access, python=sys.executable,
                           requires=(f"provider:{CUDA}",))
    assert "CPUExecutionProvider" in (report.providers or [])
    assert report.missing == [
        f"{CUDA} (the board's onnxruntime offers {', '.join(report.providers or [])}; "
        f"{CUDA_HINT})"]


def test_requirements_are_distributions_or_providers():
    assert parse_requirement("numpy") == ("dist", "numpy")
    assert parse_requirement("onnxruntime-gpu") == ("dist", "onnxruntime-gpu")
    assert parse_requirement("provider:TensorrtExecutionProvider") == (
        "provider", "TensorrtExecutionProvider")


@pytest.mark.parametrize(("entry", "why"), [
    ("provider:", "does not name an onnxruntime execution provider"),
    ("provider:CUDA EP", "does not name an onnxruntime execution provider"),
    ("numpy>=1.24", "neither a Python distribution name nor provider:<Name>"),
    ("gpu:cuda", "neither a Python distribution name nor provider:<Name>"),
])
def test_a_malformed_requirement_is_a_bundle_error(tmp_path, entry, why):
    bundle = make_bundle(tmp_path, "alpha", requires=["numpy", entry])
    with pytest.raises(BundleError, match=r"bundle\.json: requirement .* " + re.escape(why)
                       ) as info:
        load_bundle(bundle)
    assert repr(entry) in str(info.value)
