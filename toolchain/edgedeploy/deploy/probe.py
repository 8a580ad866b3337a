"""Profiling a board where it stands: the runtime's probe run over the deployer's transport.

``edgedeploy profile --target ALIAS`` for an SSH target measures on the board itself. Under the
target's install path, beside the releases and never touching them:

    probe/runtime-<digest>.zip               the runtime package (once per runtime version)
    probe/files/<model>-<size>-<digest>/...  calibration models (once per model)
    probe/requests/<token>.json              the request, removed after the run

then ``env PYTHONPATH=probe/runtime-<digest>.zip PYTHON -m edgedeploy.runtime.probe --request
FILE`` runs with the target's one interpreter (:func:`edgedeploy.deploy.api.board_python`, as the
runner, health checks and refinement use it). Its JSON lines stream back as they are written;
a failure becomes an error with the documented exit code: unreachable 4, a board that lacks
numpy or onnxruntime (or whose cores do not match its descriptor) 2, a probe that crashed 1.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgedeploy.deploy.transport import CommandResult, Transport, TransportOptions
from edgedeploy.errors import ExecutionError, InputError, TargetError
from edgedeploy.schemas.manifest import TargetRef

log = logging.getLogger("edgedeploy.deploy")

#: Seconds allowed beyond the layer budget (start-up, imports), and per calibration model.
SLACK_S, PER_MODEL_S = 120.0, 600.0


def _digest(files: Mapping[str, bytes]) -> str:
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n"
                   for path, data in sorted(files.items()))
    return hashlib.sha256(sums.encode()).hexdigest()[:16]


class BoardProbe:
    """``runtime.probe`` on one board (a ``costmodel.profiling.Probe``): uploads what it needs
    once, runs a request, streams its events and maps its failures to clear errors."""

    def __init__(self, transport: Transport, root: str, python: str, alias: str) -> None:
        self.t, self.root, self.python, self.alias = transport, root, python, alias
        self.label = transport.label
        self._package: str | None = None

    # -- uploads ----------------------------------------------------------------------------
    def package(self) -> str:
        """The runtime package on the board, as one zip Python imports from (zipimport: one
        upload, nothing to unpack); uploaded when this runtime version is new there."""
        if self._package is not None:
            return self._package
        from edgedeploy.generator.bundle import runtime_package

        files = runtime_package()
        dest = f"{self.root}/probe/runtime-{_digest(files)}.zip"
        if not self._exists(dest):
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "runtime.zip"
                _write_zip(local, files)
                self._store(local, dest)
        self._package = dest
        return dest

    def upload(self, files: Mapping[str, Path]) -> dict[str, str]:
        """Each file at ``probe/files/<key>`` on the board (kept: keys name their content)."""
        remote = {key: f"{self.root}/probe/files/{_safe_key(key)}" for key in files}
        missing = set(self._missing(sorted(remote.values())))
        for key in sorted(files):
            if remote[key] in missing:
                self._store(Path(files[key]), remote[key])
        return remote

    def _store(self, local: Path, dest: str) -> None:
        """Upload beside ``dest`` and rename: a dropped link never leaves a torn file there."""
        part = f"{dest}.part-{secrets.token_hex(4)}"
        self.t.run(["mkdir", "-p", "--", dest.rsplit("/", 1)[0]],
                   what="creating the probe's folder")
        self.t.put(local, part)
        self.t.run(["mv", "-f", "--", part, dest], what=f"storing {dest.rsplit('/', 1)[1]}")

    def _exists(self, path: str) -> bool:
        return self.t.run(["test", "-e", path], check=False, changes=False,
                          what="looking for the probe").ok

    def _missing(self, paths: Sequence[str]) -> list[str]:
        if not paths:
            return []
        script = 'for f do [ -e "$f" ] || printf "%s\\n" "$f"; done'
        res = self.t.run(["sh", "-c", script, "edgedeploy", *paths], changes=False,
                         what="looking for uploaded files")
        return res.stdout.splitlines()

    # -- a run ------------------------------------------------------------------------------
    def __call__(self, request: dict[str, Any], files: Mapping[str, Path],
                 on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Run ``request`` (its ``files`` uploaded first); every event goes to ``on_event``
        as it arrives; returns the ``start`` event."""
        package = self.package()
        request = {**request, "files": self.upload(files)}
        path = f"{self.root}/probe/requests/{secrets.token_hex(6)}.json"
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "request.json"
            local.write_text(json.dumps(request))
            self.t.run(["mkdir", "-p", "--", path.rsplit("/", 1)[0]],
                       what="creating the request folder")
            self.t.put(local, path)
        seen: dict[str, dict[str, Any]] = {}

        def on_line(line: str) -> None:
            event = _event(line)
            if event is None:
                return
            seen[str(event.get("event"))] = event
            if event.get("event") != "error":
                on_event(event)

        argv = ["env", f"PYTHONPATH={package}", self.python, "-m", "edgedeploy.runtime.probe",
                "--request", path]
        try:
            res = self.t.run(argv, check=False, timeout=_timeout(request), on_line=on_line,
                             what="measuring on the board")
        finally:
            self.t.run(["rm", "-f", "--", path], check=False, what="removing the request")
        if "error" in seen or res.exit_code != 0 or "done" not in seen:
            raise self._failure(seen.get("error"), res)
        return seen.get("start", {})

    def _failure(self, error: dict[str, Any] | None, res: CommandResult) -> Exception:
        """The error a failed run means, with what to do about it."""
        where = f"{self.label}: profiling target {self.alias!r}"
        if error is None:
            if res.exit_code == 127 or "No such file" in res.stderr:
                return TargetError(f"{where}: the board's Python {self.python!r} was not found",
                                   hint=f"install Python 3 there, or set targets.{self.alias}"
                                        ".python in the manifest to its interpreter")
            return ExecutionError(f"{where}: the probe exited {res.exit_code} without an answer"
                                  + (f": {res.tail()[-400:]}" if res.tail() else ""),
                                  hint="check the board with `edgedeploy doctor --target "
                                       f"{self.alias}`")
        kind, message = error.get("kind"), str(error.get("message"))
        if kind == "missing":
            package = error.get("package")
            return TargetError(f"{where}: the board lacks {package}, which profiling needs "
                               f"({message})",
                               hint=f"install it there ({self.python} -m pip install {package})"
                                    f", or set targets.{self.alias}.python to an interpreter "
                                    "that has it")
        if kind == "request":
            hint = ("the board descriptor does not match this board: fix its clusters' cpu_ids "
                    "or name the right `board:`" if "cpus" in error
                    else "use the same edgedeploy version on both sides")
            return TargetError(f"{where}: {message}", hint=hint)
        log.debug("%s: the probe's trace on the board:\n%s", self.label, error.get("detail"))
        return ExecutionError(f"{where}: the probe failed on the board: {message}",
                              hint="the board's trace is in the debug log (-vv); "
                                   f"`edgedeploy doctor --target {self.alias}` checks the board")


def _event(line: str) -> dict[str, Any] | None:
    """A probe event from one line of output, or None for anything else."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _write_zip(path: Path, files: Mapping[str, bytes]) -> None:
    """A deterministic zip (sorted entries, fixed timestamps): same runtime, same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(files):
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[rel])


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"bad probe file key {key!r}")
    return key


def _timeout(request: dict[str, Any]) -> float:
    budget = float((request.get("layers") or {}).get("budget_s", 0.0))
    budget += float((request.get("sessions") or {}).get("budget_s", 0.0))
    models = len((request.get("models") or {}).get("models") or [])
    return (budget if math.isfinite(budget) else PER_MODEL_S) + SLACK_S + PER_MODEL_S * models


def profile_over_ssh(ref: TargetRef, alias: str, *, budget_s: float, shapes: str = "designed",
                     progress: Callable[..., None] | None = None,
                     info: Callable[[str], None] | None = None,
                     calibration: Sequence[tuple[str, int]] | None = None,
                     access: TransportOptions | None = None,
                     graph: Any | None = None, own: Any | None = None,
                     total_s: float | None = None) -> dict[str, Any]:
    """Profile the board of SSH target ``alias`` into its board descriptor's profile
    (``graph``'s own conv shapes first, when given; ``own``, a ``costmodel.segments.OwnModel``,
    also run whole there for its own segment factors; ``total_s`` as
    ``costmodel.profiling.profile_local`` takes it).

    The profile is keyed by ``ref.board``'s fingerprint, as ``plan`` looks it up, so a target
    left at ``board: local`` (this host's descriptor) is refused: its samples would land in this
    host's profile. A fleet's boards share one descriptor; the first host is measured.
    """
    from edgedeploy.costmodel.profiling import check_shapes, profile_board

    check_shapes(shapes)  # before any connection
    _own_descriptor(ref, alias)
    answer = on_board(ref, alias, access, lambda target, probe: profile_board(
        target, probe, budget_s, shapes, progress, info, calibration, graph=graph, own=own,
        total_s=total_s))
    return {"alias": alias, **answer}


def own_model_over_ssh(ref: TargetRef, alias: str, own: Any, *,
                       info: Callable[[str], None] | None = None,
                       access: TransportOptions | None = None) -> dict[str, Any] | None:
    """``own`` (a ``costmodel.segments.OwnModel``) run whole on the board of SSH target
    ``alias``, which has a profile: its own segment factors stored beside that profile, as a
    host's second model is calibrated (``costmodel.profiling.own_board_factors``)."""
    from edgedeploy.costmodel.profile import profile_path
    from edgedeploy.costmodel.profiling import own_board_factors

    _own_descriptor(ref, alias)
    return on_board(ref, alias, access, lambda target, probe: own_board_factors(
        target, profile_path(target), probe, own, info))


def on_board(ref: TargetRef, alias: str, access: TransportOptions | None,
             work: Callable[[Any, BoardProbe], Any]) -> Any:
    """``work(target, probe)`` with the probe on ``alias``'s board (its first host)."""
    from edgedeploy.boards.catalog import load_target
    from edgedeploy.deploy.api import board_python, hosts_of, open_transport

    target = load_target(ref.board)
    transport = open_transport(ref, hosts_of(ref)[0], access=access)
    try:
        transport.open()
        return work(target, BoardProbe(transport, transport.expand(ref.path),
                                       board_python(ref, target), alias))
    finally:
        transport.close()


def _own_descriptor(ref: TargetRef, alias: str) -> None:
    """A profile is keyed by the board's descriptor: ``board: local`` would store a board's
    samples in this host's profile (see :func:`profile_over_ssh`)."""
    from edgedeploy.runtime.vocab import LOCAL

    if ref.board == LOCAL:
        raise InputError(f"target {alias!r} reaches a board over SSH but names no board "
                         "descriptor (board: local is this host's, and so would be the profile)",
                         hint=f"set targets.{alias}.board in the manifest to the board's "
                              "descriptor: a name from `edgedeploy targets` or a YAML file")
