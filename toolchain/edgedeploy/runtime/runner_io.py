"""Where the runner's frames come from and where its results go: config.json ``io``.

Written by the generator from the manifest's ``io:`` section::

    "io": {"source": {"kind": "client"}                 # default: frames from clients
                   | {"kind": "random", "seed": 0, "pool": 4}  # the seeded benchmark feed
                   | {"kind": "npz" | "npy", "path": P}  # arrays with a leading frame axis
                   | {"kind": "images", "path": DIR}     # image files, through "preprocess"
                   | {"kind": "python", "callable": "module:function"},   # app/module.py
           "sink": {"kind": "client" | "none"} | {"kind": "npz", "path": DIR}
                 | {"kind": "python", "callable": "module:function"},
           "loop": false,          # npz/npy/images: cycle instead of finishing at the end
           "socket": null,         # the Unix socket; default <state dir>/runner.sock
           "tcp": null,            # "tcp://HOST:PORT" (0: any free port), needs token_file
           "token_file": null,     # a file on the board holding the shared token
           "window": 8, "max_clients": 16, "max_frame_bytes": 0,
           "preprocess": null}     # see preprocess.py

Paths name files on the board: absolute, ``~/...``, or relative to the state dir (``<install
root>/run`` when deployed). A ``python`` source's ``function(config)`` returns ``index -> list of
arrays`` (one per model input); a ``python`` sink's returns ``(index, outputs) -> None``.

Without ``io`` (a bundle built from a bare model, or by tests) the runner keeps config
``source``'s seeded benchmark feed and drops outputs, as before; ``measure`` (refinement) always
uses config ``source``: timings must not depend on a camera.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import wire
from edgedeploy.runtime.runner_config import BundleConfigError, RunnerConfig

FrameSource = Callable[[int], list[np.ndarray]]
SOURCES = ("client", "random", "npz", "npy", "images", "python")
SINKS = ("client", "none", "npz", "python")


@dataclass(frozen=True)
class IoSettings:
    """config.json ``io`` resolved (see the module doc)."""

    source: Mapping[str, Any] = field(default_factory=lambda: {"kind": "client"})
    sink: Mapping[str, Any] = field(default_factory=lambda: {"kind": "client"})
    loop: bool = False
    socket: str | None = None
    tcp: str | None = None
    token_file: str | None = None
    window: int = 8
    max_clients: int = 16
    max_frame_bytes: int = 0
    preprocess: Mapping[str, Any] | None = None

    @property
    def kind(self) -> str:
        return str(self.source.get("kind", "client"))


def io_settings(cfg: RunnerConfig, source: str | None = None) -> IoSettings:
    """The bundle's ``io``; without one, the legacy benchmark feed of config ``source``.
    ``source`` (``serve --source``) overrides the source kind."""
    raw = cfg.raw.get("io")
    if raw is None:
        base = IoSettings(source=dict(cfg.raw.get("source") or {"kind": "random"}),
                          sink={"kind": "none"})
    else:
        try:
            base = IoSettings(
                source=dict(raw.get("source") or {"kind": "client"}),
                sink=dict(raw.get("sink") or {"kind": "client"}),
                loop=bool(raw.get("loop", False)), socket=raw.get("socket"),
                tcp=raw.get("tcp"), token_file=raw.get("token_file"),
                window=int(raw.get("window", 8)), max_clients=int(raw.get("max_clients", 16)),
                max_frame_bytes=int(raw.get("max_frame_bytes", 0)),
                preprocess=raw.get("preprocess"))
        except (AttributeError, TypeError, ValueError) as exc:
            raise BundleConfigError(f"config io is malformed: {exc}") from None
    if source is not None:
        spec = dict(cfg.raw.get("source") or {}) if source == "random" else {}
        base = IoSettings(**{**base.__dict__, "source": {**spec, "kind": source},
                             "sink": {"kind": "client" if source == "client" else "none"}})
    if base.kind not in SOURCES:
        raise BundleConfigError(f"unknown io source {base.kind!r}", hint=f"one of {SOURCES}")
    sink = str(base.sink.get("kind"))
    if sink not in SINKS:
        raise BundleConfigError(f"unknown io sink {sink!r}", hint=f"one of {SINKS}")
    if (base.kind == "client") != (sink == "client"):
        raise BundleConfigError("io source client goes with sink client (results return to the "
                                f"client that sent the frame), got {base.kind} -> {sink}")
    return base


def board_path(raw: str, state_dir: Path) -> Path:
    """A path in the config, on this board: absolute, ``~``, or relative to the state dir."""
    path = Path(os.path.expanduser(str(raw)))
    return path if path.is_absolute() else state_dir / path


def _tensors(cfg: RunnerConfig, key: str) -> list[wire.TensorDesc]:
    try:
        return [wire.TensorDesc.from_dict(d) for d in cfg.raw[key]]
    except (KeyError, TypeError, wire.ProtocolError) as exc:
        raise BundleConfigError(f"config {key} is malformed: {exc}") from None


# --- sources ----------------------------------------------------------------------------------
def frame_source(io: IoSettings, cfg: RunnerConfig, state_dir: Path
                 ) -> tuple[FrameSource, int | None]:
    """``index -> tensors`` for the internal feeds and how many frames there are (None:
    endless); ``loop`` makes a finite source endless."""
    inputs = _tensors(cfg, "inputs")
    spec, kind = io.source, io.kind
    if kind == "random":
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        pool = [[rng.standard_normal(t.shape).astype(t.dtype) for t in inputs]
                for _ in range(max(1, int(spec.get("pool", 4))))]
        return (lambda k: pool[k % len(pool)]), None
    if kind == "python":
        return python_callable(cfg, str(spec.get("callable")))(dict(cfg.raw)), None
    if kind in ("npz", "npy"):
        arrays = _arrays(kind, board_path(str(spec.get("path")), state_dir), inputs)
    elif kind == "images":
        return _images(io, board_path(str(spec.get("path")), state_dir), inputs)
    else:
        raise BundleConfigError(f"io source {kind!r} has no internal feed")
    count = min(a.shape[0] for a in arrays)
    return (lambda k: [a[k % count] for a in arrays]), None if io.loop else count


def _arrays(kind: str, path: Path, inputs: list[wire.TensorDesc]) -> list[np.ndarray]:
    """Frames stacked on a leading axis: an .npz by input name, or one .npy (one input)."""
    try:
        if kind == "npy":
            if len(inputs) != 1:
                raise BundleConfigError(f"an .npy source feeds one input; the model takes "
                                        f"{len(inputs)}", hint="use an .npz named by input")
            arrays = [np.load(path, allow_pickle=False)]
        else:
            with np.load(path, allow_pickle=False) as npz:
                missing = [t.name for t in inputs if t.name not in npz.files]
                if missing:
                    raise BundleConfigError(f"{path} lacks arrays for inputs {missing}",
                                            hint=f"it holds {npz.files}")
                arrays = [npz[t.name] for t in inputs]
    except (OSError, ValueError) as exc:
        raise BundleConfigError(f"cannot read the io source {path}: {exc}") from None
    out = []
    for arr, t in zip(arrays, inputs, strict=True):
        stacked = frames_of(arr, t.shape)
        if stacked is None:
            raise BundleConfigError(f"{path}: input {t.name!r} has shape {list(arr.shape)}; "
                                    f"expected [frames, {', '.join(map(str, t.shape))}]")
        out.append(np.ascontiguousarray(stacked, dtype=t.dtype))
    return out


def frames_of(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``arr`` as frames of an input of ``shape``: ``[frames, *shape]``, or for a batch-1 input
    also ``[frames, *shape[1:]]`` (a stack of single images); None when it is neither."""
    if arr.ndim == len(shape) + 1 and tuple(arr.shape[1:]) == shape and arr.shape[0] >= 1:
        return arr
    if shape and shape[0] == 1 and tuple(arr.shape[1:]) == shape[1:] and arr.shape[0] >= 1:
        return arr[:, None]
    return None


def _images(io: IoSettings, folder: Path, inputs: list[wire.TensorDesc]
            ) -> tuple[FrameSource, int | None]:
    from edgedeploy.runtime.preprocess import ImageError, Preprocess, image_files, load_image

    if len(inputs) != 1:
        raise BundleConfigError(f"an images source feeds one input; the model takes "
                                f"{len(inputs)}")
    try:
        files = image_files(folder)
        prep = Preprocess.for_input(inputs[0].shape, io.preprocess)
    except ImageError as exc:
        raise BundleConfigError(str(exc)) from None
    if not files:
        raise BundleConfigError(f"{folder} holds no images")
    return (lambda k: [prep(load_image(files[k % len(files)]))]), None if io.loop else len(files)


def python_callable(cfg: RunnerConfig, ref: str) -> Callable[..., Any]:
    """``module:function`` from the bundle's ``app/``."""
    module, _, attr = ref.partition(":")
    app = str(cfg.root / "app")
    if app not in sys.path:
        sys.path.insert(0, app)
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise BundleConfigError(f"cannot load {ref!r} from app/: {exc}") from None


# --- sinks ------------------------------------------------------------------------------------
class NpzSink:
    """One ``<index>.npz`` per frame (arrays by output name). A write that fails (a full disk)
    stops the sink, not the runner; its status says why."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        self.folder = folder
        self.names = names
        self.written = 0
        self.error: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.error = f"cannot create {folder}: {exc.strerror or exc}"

    def __call__(self, index: int, outputs: list[np.ndarray]) -> None:
        if self.error is not None:
            return
        path = self.folder / f"{index:09d}.npz"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **dict(zip(self.names, outputs, strict=True)))
            os.replace(tmp, path)
            self.written += 1
        except OSError as exc:
            self.error = f"writing {path} failed: {exc.strerror or exc}"
            print(f"edgedeploy: npz sink stopped: {self.error}", file=sys.stderr, flush=True)
            tmp.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return {"kind": "npz", "path": str(self.folder), "written": self.written,
                "state": "stopped" if self.error else "ok", "error": self.error}


def frame_sink(io: IoSettings, cfg: RunnerConfig, state_dir: Path
               ) -> Callable[[int, list[np.ndarray]], None] | None:
    kind = str(io.sink.get("kind"))
    if kind in ("none", "client"):
        return None
    if kind == "npz":
        names = [t.name for t in _tensors(cfg, "outputs")]
        return NpzSink(board_path(str(io.sink.get("path")), state_dir), names)
    return python_callable(cfg, str(io.sink.get("callable")))(dict(cfg.raw))


# --- the service ------------------------------------------------------------------------------
def read_board_token(path: Path) -> bytes:
    """The shared token; the file must be private to the runner's user (like an SSH key)."""
    try:
        st = path.stat()
        token = path.read_bytes().strip().splitlines()[0].strip() if st.st_size else b""
    except OSError as exc:
        raise BundleConfigError(f"cannot read io.token_file {path}: {exc.strerror or exc}",
                                hint="create it on the board with one line, the shared token "
                                     "(chmod 600)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleConfigError(f"io.token_file {path} is readable by other users",
                                hint=f"chmod 600 {path}")
    if len(token) < 16:
        raise BundleConfigError(f"io.token_file {path} holds a token shorter than 16 bytes",
                                hint="e.g. python3 -c 'import secrets; "
                                     "print(secrets.token_urlsafe(32))' > FILE")
    return token


def open_service(io: IoSettings, cfg: RunnerConfig, state_dir: Path,
                 log: Callable[[str], None] | None = None) -> Any:
    """The started service: the Unix socket always, TCP too when ``io.tcp`` asks."""
    from edgedeploy.runtime.service import Service, ServiceSpec, listen_tcp, listen_unix

    spec = ServiceSpec(cfg.name, tuple(_tensors(cfg, "inputs")), tuple(_tensors(cfg, "outputs")),
                       window=max(1, io.window), max_clients=max(1, io.max_clients),
                       max_frame_bytes=max(0, io.max_frame_bytes))
    sock = board_path(io.socket, state_dir) if io.socket else state_dir / wire.UNIX_SOCKET
    sock.parent.mkdir(parents=True, exist_ok=True)
    listeners = []
    try:
        listeners.append(listen_unix(sock))
        if io.tcp:
            if not io.token_file:
                raise BundleConfigError("io.tcp needs io.token_file")
            _, host, port = wire.parse_address(str(io.tcp))
            token = read_board_token(board_path(io.token_file, state_dir))
            listeners.append(listen_tcp(host, port, token))
    except wire.ServiceError as exc:
        for lst in listeners:
            lst.close()
        raise BundleConfigError(exc.message, exc.hint) from None
    except BaseException:
        for lst in listeners:
            lst.close()
        raise
    return Service(spec, listeners, log=log).start()
