"""Helpers for the tests that serve a real bundle to clients: build it with an ``io:`` section,
start ``main.py serve`` as the board does, wait for its socket, compute onnxruntime's answer."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tests.generator.conftest import small_build

from edgedeploy.generator import build_bundle
from edgedeploy.generator.context import with_io
from edgedeploy.schemas.io import Io


def client_bundle(tmp: Path, io: Io | None = None, name: str = "bundle") -> tuple[Path, Path]:
    """squeezenet1_1 at 32x32 (two stages, an onnxruntime segment) with ``io`` (default: the
    client source), built through the generator as push builds it; (bundle root, model)."""
    build, graph, model = small_build(tmp)
    build = with_io(build, io or Io(window=4), graph)
    return build_bundle(build, graph, model, tmp / name).root, model


def runner_env(state: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state),
            "EDGEDEPLOY_STATE_DIR": str(state)}


@dataclass
class Runner:
    """A ``main.py serve`` subprocess and where it keeps its state."""

    proc: subprocess.Popen[str]
    state: Path

    @property
    def socket(self) -> Path:
        return self.state / "runner.sock"

    def status(self) -> dict[str, Any]:
        return json.loads((self.state / "runner.status.json").read_text())

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        """The first status (rewritten about every second) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout_s
        while not predicate(status := self.status()):
            assert time.monotonic() < deadline, f"status never satisfied the check: {status}"
            time.sleep(0.1)
        return status

    def listen(self, kind: str) -> str:
        """The address the runner reports for ``kind`` (``unix`` or ``tcp``)."""
        for address in self.status()["io"]["listen"]:
            if address.startswith(kind + "://"):
                return str(address)
        raise AssertionError(f"no {kind} listener in {self.status()['io']}")

    def stop(self) -> str:
        """SIGTERM, wait, return the runner log (stderr)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


@contextlib.contextmanager
def serving(bundle: Path, state: Path, *args: str, ready: str = "socket",
            timeout_s: float = 90.0) -> Iterator[Runner]:
    """Run ``main.py serve ARGS`` until the context ends; ``ready``: wait for the Unix socket,
    or for a status file saying ``running`` (internal feeds)."""
    state.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-I", "main.py", "serve", *args], cwd=bundle,
                            env=runner_env(state), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    runner = Runner(proc, state)
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(runner, ready):
            if proc.poll() is not None:
                raise AssertionError(f"the runner exited {proc.returncode}: {runner.stop()}")
            assert time.monotonic() < deadline, "the runner did not come up"
            time.sleep(0.05)
        yield runner
    finally:
        runner.stop()


@contextlib.contextmanager
def served_bundle(tmp: Path) -> Iterator[tuple[Runner, Reference]]:
    """The client bundle (:func:`client_bundle`) served from ``tmp``, with its onnxruntime
    reference: what a module of service tests shares."""
    bundle, model = client_bundle(tmp)
    with serving(bundle, tmp / "state") as runner:
        yield runner, Reference(model)


def _ready(runner: Runner, ready: str) -> bool:
    with contextlib.suppress(OSError, ValueError):
        status = runner.status()
        if ready == "socket":
            return runner.socket.exists() and "listen" in status.get("io", {})
        return status.get("state") in ("running", "finished")
    return False


class Reference:
    """onnxruntime on the host, on the original model: the answer a served frame must give."""

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: x})


def assert_close(got: list[np.ndarray], want: list[np.ndarray], tol: float = 1e-4) -> None:
    """Every output within ``tol``, relative to the output's scale (at least 1)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.abs(w).max()))
        assert float(np.abs(g - w).max()) <= tol * scale, float(np.abs(g - w).max())


def frames(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 3, 32, 32)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
