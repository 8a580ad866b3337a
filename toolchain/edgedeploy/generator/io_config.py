"""The manifest's ``io:`` converted once into the runner's config ``io`` (runtime/runner_io.py).

Checked here against the model's inputs (a build of a manifest whose ``io`` cannot feed the model
fails before anything reaches a board); a python source or sink's module is shipped in ``app/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedeploy.errors import ManifestError
from edgedeploy.runtime.layouts import carried_shape, own_layout
from edgedeploy.schemas.io import Io, check_io, with_layout


def graph_inputs(graph: Any) -> list[tuple[str, tuple[int, ...], str]]:
    """The model's inputs as an application hands them to the runner (its own layout)."""
    return [(t.name, carried_shape(graph, t.name), str(t.dtype)) for t in graph.inputs]


def ensure_io_fits(io: Io, graph: Any) -> None:
    """ManifestError (exit 2) listing what in ``io`` does not fit the model's inputs."""
    problems = check_io(with_layout(io, own_layout(graph)), graph_inputs(graph))
    if problems:
        raise ManifestError("io: " + "; ".join(problems),
                            hint="the model's inputs: " + ", ".join(
                                f"{n} {list(s)} {d}" for n, s, d in graph_inputs(graph)))


def runner_io(io: Io, graph: Any) -> tuple[dict[str, Any], tuple[tuple[str, bytes], ...]]:
    """``(config io, app files)`` for ``io`` (its preprocessing's layout always said)."""
    ensure_io_fits(io, graph)
    io = with_layout(io, own_layout(graph))
    files: dict[str, bytes] = {}
    source = _endpoint(io.source.kind, io.source.path, io.source.callable, files)
    if io.source.kind == "random":
        source.update(seed=io.source.seed, pool=4)
    sink_path = io.sink.path if io.sink is not None else None
    sink_fn = io.sink.callable if io.sink is not None else None
    config: dict[str, Any] = {
        "source": source, "sink": _endpoint(io.sink_kind, sink_path, sink_fn, files),
        "loop": io.loop, "socket": None, "tcp": None, "token_file": None,
        "window": io.window, "max_clients": io.max_clients,
        "max_frame_bytes": int(io.max_frame_mb * (1 << 20)) if io.max_frame_mb else 0,
        "preprocess": (io.preprocess.model_dump(exclude_none=True)
                       if io.preprocess is not None else None)}
    if io.listen.startswith("unix://"):
        config["socket"] = io.listen[len("unix://"):]
    elif io.listen.startswith("tcp://"):
        config.update(tcp=io.listen, token_file=io.token_file)
    return config, tuple(sorted(files.items()))


def _endpoint(kind: str, path: str | None, fn: str | None,
              files: dict[str, bytes]) -> dict[str, Any]:
    if kind == "python" and fn is not None:
        file, _, name = fn.rpartition(":")
        module = Path(file)
        try:
            files[f"app/{module.name}"] = module.read_bytes()
        except OSError as exc:
            raise ManifestError(f"io: cannot read {module}: {exc.strerror or exc}") from None
        return {"kind": kind, "callable": f"{module.stem}:{name}"}
    return {"kind": kind, "path": path} if path else {"kind": kind}
