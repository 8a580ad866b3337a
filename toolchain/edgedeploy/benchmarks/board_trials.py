"""Measure-to-decide on a board reached over SSH: the contenders timed where they will run.

A bundle that only measures (the plan's segments and every contender's) is built here and
uploaded beside the releases, as an upload in progress (``releases/.incoming-*``, never
installed, removed afterwards); the runner there holds every contender open (``main.py
trials``, runtime/trials.py) and the host drives the alternated rounds through one command's
stdin and stdout, as it drives them on this host. The board's interpreter is the one push,
health and refinement use (``deploy.api.board_python``); a fleet measures on its canary.

A board whose runner is serving is not measured: the contenders would share its cores with the
release that serves, and the timings would be of neither. Refinement after ``push`` stops the
runner before it measures; ``plan`` never stops a service.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedeploy.benchmarks.estimator import Window
from edgedeploy.benchmarks.winograd_trial import TimingsOf
from edgedeploy.errors import EdgeDeployError, ExecutionError, UnreachableError
from edgedeploy.runtime import ir
from edgedeploy.schemas.plan import Plan

#: Seconds one answer of the board may take (a window, or starting every contender).
ANSWER_TIMEOUT_S = 600.0


class BoardBusy(EdgeDeployError):
    """The board's runner serves a release: measuring beside it would time neither."""


#: What leaves a board unmeasured rather than failing the plan: it cannot be reached (a refused
#: host key included: planning is no reason to trust one), or its runner serves.
UNMEASURABLE: tuple[type[EdgeDeployError], ...] = (BoardBusy, UnreachableError)


class BoardTrials:
    """Contenders held open by ``main.py trials`` on one board, timed on request."""

    def __init__(self, stream: Any, label: str, latency_samples: int) -> None:
        self.stream, self.label, self.latency_samples = stream, label, latency_samples
        self._buffer = b""
        #: contenders the board did not start, and why (raised where they are measured)
        self.refused: dict[str, str] = {}

    def start(self, plans: dict[str, Any], optional: list[str],
              start_bytes: dict[str, float], memory_share: float) -> None:
        """Send the contenders and wait until the board has started them."""
        self._send({"plans": {n: p.to_dict() for n, p in plans.items()}, "order": list(plans),
                    "optional": optional, "start_bytes": start_bytes,
                    "memory_share": memory_share})
        opened = self._answer().get("opened")
        if not isinstance(opened, dict):
            raise ExecutionError(f"{self.label}: `main.py trials` did not say what it started")
        self.refused = {str(k): str(v) for k, v in opened.items() if v is not None}

    def __call__(self, name: str, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, float | None]:
        if name in self.refused:
            why = self.refused[name]
            raise (MemoryError(why) if why.startswith("MemoryError") else
                   ExecutionError(f"{self.label}: {name} did not start: {why}"))
        self._send({"measure": name, "frames": frames, "warmup": warmup,
                    "latency_samples": self.latency_samples if latency else 0})
        data = self._answer()
        if "error" in data:
            raise ExecutionError(f"{self.label}: measuring {name}: {data['error']}")
        energy = data.get("energy_mj")  # the window as the board timed it (whole periods)
        alone = data.get("latency_ms_p50")
        return (Window(int(data["frames"]), float(data["wall_s"])),
                float(alone) if isinstance(alone, (int, float)) else None,
                float(energy) if isinstance(energy, (int, float)) else None)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the stream may be gone; closing it matters
            self._send({"close": True})
        self.stream.close()

    # -- the line protocol --------------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        self.stream.sendall((json.dumps(obj, sort_keys=True) + "\n").encode())

    def _answer(self) -> dict[str, Any]:
        """The next JSON object the board wrote (anything else on stdout is skipped)."""
        self.stream.settimeout(ANSWER_TIMEOUT_S)
        while True:
            while b"\n" not in self._buffer:
                chunk = bytearray(1 << 16)
                try:
                    n = self.stream.recv_into(memoryview(chunk))
                except TimeoutError:
                    raise ExecutionError(f"{self.label}: `main.py trials` gave no answer in "
                                         f"{ANSWER_TIMEOUT_S:.0f} s") from None
                if n == 0:
                    raise ExecutionError(
                        f"{self.label}: `main.py trials` ended: "
                        f"{self.stream.eof_reason() or 'no reason given'}",
                        hint="`edgedeploy doctor --target ALIAS` checks what the board lacks; "
                             "`edgedeploy plan --no-measure` plans from the model alone")
                self._buffer += bytes(chunk[:n])
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if text.startswith("{"):
                return dict(json.loads(text))


class BoardSession:
    """The measuring bundle on the board and the trials command holding its contenders:
    opened by :func:`open_board`, closed (the upload removed) by :meth:`close`."""

    def __init__(self, transport: Any, board: Any, upload: str, local: Path,
                 trials: BoardTrials) -> None:
        self.transport, self.board, self.upload, self.local = transport, board, upload, local
        self.trials = trials

    def __call__(self, entry: Any, frames: int, warmup: int, latency: bool = True
                 ) -> tuple[Window, float | None, float | None]:
        """One window of a decision entry (``decide.Entry``), by its key."""
        return self.trials(entry.key, frames, warmup, latency)

    def close(self) -> None:
        try:
            self.trials.close()
        finally:
            self.board.discard(self.upload)
            self.transport.close()
            shutil.rmtree(self.local, ignore_errors=True)


def _check_idle(board: Any, host: str, alias: str) -> None:
    state = board.probe()
    if state.alive:
        raise BoardBusy(
            f"{host}: the runner serves release {state.running}; contenders measured beside it "
            "would share its cores",
            hint=f"`edgedeploy stop --target {alias}` first, or let `edgedeploy push` measure "
                 "on the board (its refinement stops the runner while it measures)")


def why_unmeasurable(manifest: Any, alias: str, access: Any = None) -> str | None:
    """Why ``alias``'s board cannot be measured now (it cannot be reached, or its runner
    serves), else None: asked before anything runs there, a quick profile included."""
    from edgedeploy.deploy.api import canary_of, open_transport
    from edgedeploy.deploy.board import Board

    ref = manifest.target(alias)
    host = canary_of(ref)
    transport = open_transport(ref, host, access=access)
    try:
        transport.open()
        _check_idle(Board(transport, transport.expand(ref.path)), host, alias)
    except UNMEASURABLE as exc:
        return exc.message
    finally:
        transport.close()
    return None


def open_board(manifest: Any, alias: str, board_name: str, plan: Plan, graph: ir.Graph,
               model_path: Path, contenders: dict[str, Any], *, optional: list[str],
               start_bytes: dict[str, float], memory_share: float, latency_samples: int,
               access: Any = None, say: Callable[[str], None] = lambda _m: None
               ) -> BoardSession:
    """Build the measuring bundle, upload it to ``alias``'s board (its canary host), start
    ``main.py trials`` there with every contender (runner ``PlanConfig`` by name) and return
    the session. :class:`BoardBusy` where the board's runner serves a release."""
    from edgedeploy.deploy.api import board_python, canary_of, open_transport
    from edgedeploy.deploy.board import Board
    from edgedeploy.deploy.bundle import load_bundle
    from edgedeploy.generator.bundle import build_bundle
    from edgedeploy.generator.sources import measuring_input

    ref = manifest.target(alias)
    host = canary_of(ref)
    transport = open_transport(ref, host, access=access)
    local = Path(tempfile.mkdtemp(prefix="edgedeploy-trials-"))
    board, upload, session = None, None, None
    try:
        transport.open()
        board = Board(transport, transport.expand(ref.path))
        _check_idle(board, host, alias)
        build = measuring_input(plan, board_name, tuple(contenders.values()))
        info = build_bundle(build, graph, model_path, local / "bundle")
        say(f"measure: uploading the contenders' bundle ({info.id}) to {host}")
        board.prepare()
        upload = board.upload(load_bundle(info.root))
        board.verify(upload)
        stream = transport.stream([board_python(ref), f"{upload}/main.py", "trials"],
                                  what="measure-to-decide")
        session = BoardSession(transport, board, upload, local,
                               BoardTrials(stream, host, latency_samples))
        say(f"measure: starting {len(contenders)} contenders on {host}")
        session.trials.start(contenders, optional, start_bytes, memory_share)
        return session
    except BaseException:
        if session is not None:
            session.close()
        else:
            if board is not None and upload is not None:
                board.discard(upload)
            transport.close()
            shutil.rmtree(local, ignore_errors=True)
        raise


def board_opener(manifest: Any, alias: str, board_name: str, plan: Plan, *,
                 latency_samples: int, access: Any = None,
                 say: Callable[[str], None] = lambda _m: None) -> Callable[..., BoardSession]:
    """``opener(graph, model file, entries)``: those decision entries held open on the board
    (:func:`open_board`), for the model as planned, its int8 variant or the Winograd trial's
    rewritten one; ``plan`` names the bundle."""
    from edgedeploy.benchmarks.decide import START_MEMORY_SHARE, start_bytes
    from edgedeploy.schemas.plan import configuration_plan

    def opener(graph: ir.Graph, model_path: Path, entries: list[Any]) -> BoardSession:
        names = [layer.name for layer in graph.layers]
        weights = model_path.stat().st_size if model_path.is_file() else 0
        return open_board(
            manifest, alias, board_name, plan, graph, model_path,
            {e.key: configuration_plan(names, e.key, e.stages, e.predicted) for e in entries},
            optional=[e.key for e in entries if e.optional],
            start_bytes={e.key: start_bytes(e, weights) for e in entries},
            memory_share=START_MEMORY_SHARE, latency_samples=latency_samples, access=access,
            say=say)

    return opener


def board_timings(manifest: Any, alias: str, access: Any = None) -> TimingsOf:
    """The Winograd trial's ``timings_of`` on the board: each convolution shape timed in its
    context there, as given and rewritten in alternation, on each core count's cores, through
    the profiler's probe (one request; the heaviest shapes first while the budget lasts)."""
    from edgedeploy.deploy.probe import on_board
    from edgedeploy.planner.winograd import LAYER_PAIRS, both_forms, conv_shapes, copies
    from edgedeploy.runtime.probe import PROTOCOL

    ref = manifest.target(alias)

    def timings_of(found: list[Any], cpus: dict[int, list[int]], seconds: float
                   ) -> dict[int, dict[str, tuple[float, float]]]:
        ms: dict[str, tuple[float, float]] = {}  # session key -> (given, rewritten) ms
        shapes: list[tuple[Any, list[str], str]] = []  # (shape, its nodes, its given key)
        with tempfile.TemporaryDirectory() as tmp:
            files: dict[str, Path] = {}
            sessions: list[dict[str, Any]] = []
            for site, nodes in conv_shapes(found):
                keys = []
                for form, model in zip(("given", "rewritten"), both_forms(site), strict=True):
                    data = model.SerializeToString()  # keys name their content on the board
                    key = f"winograd-{hashlib.sha256(data).hexdigest()[:16]}/{form}.onnx"
                    files[key] = Path(tmp) / f"{len(files)}.onnx"
                    files[key].write_bytes(data)
                    keys.append(key)
                shapes.append((site, nodes, keys[0]))
                sessions += [{"key": f"{c}/{keys[0]}", "onnx": keys[0], "against": keys[1],
                              "cpus": ids,
                              "inputs": [{"name": "x", "shape": [1, site.c_in, site.h, site.w]}]}
                             for c, ids in cpus.items()]
            request = {"protocol": PROTOCOL, "sessions": {
                "budget_s": seconds * len(cpus), "reps": LAYER_PAIRS, "sessions": sessions}}

            def on_event(event: dict[str, Any]) -> None:
                if event.get("event") == "session":
                    ms[str(event["key"])] = (float(event["ms"]), float(event["against_ms"]))

            on_board(ref, alias, access, lambda _t, probe: probe(request, files, on_event))
        out: dict[int, dict[str, tuple[float, float]]] = {c: {} for c in cpus}
        for site, nodes, given in shapes:
            for c in cpus:  # a shape the budget left untimed is left out, as on this host
                if f"{c}/{given}" in ms:
                    out[c].update(dict.fromkeys(
                        nodes, tuple(t / copies(site) for t in ms[f"{c}/{given}"])))
        return out

    return timings_of
