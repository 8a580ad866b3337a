"""The manifest's ``io:`` section: where the deployed runner's frames come from, where its results
go, and how applications reach it.

::

    io:
      source: client                 # default: applications send frames (edgedeploy.client)
      # source: random               # the seeded benchmark feed
      # source: {npz: /data/frames.npz}     # on the board: arrays by input name, frame axis first
      # source: {npy: ~/frames.npy}         # one-input models
      # source: {images: /data/camera}      # a folder of images on the board, via preprocess
      # source: {python: camera.py:frames}  # a module beside the manifest, shipped in app/
      sink: client                   # default with source client; else none, {npz: DIR} or
                                     # {python: sink.py:write}
      listen: unix                   # <install>/run/runner.sock (0600); or unix:///PATH, or
                                     # tcp://HOST:PORT with token_file (a file on the board)
      token_file: /etc/edgedeploy/token
      window: 8                      # frames a client may have in flight
      preprocess: {layout: nchw, channel_order: rgb, scale: 0.00392, mean: [0.485, 0.456, 0.406],
                   std: [0.229, 0.224, 0.225]}

Board paths (npz, npy, images, sink folders, the socket, the token file) are absolute, ``~/...``
or relative to the runner's state dir (``<install>/run``). Tokens never live in the manifest:
``token_file`` names where the board keeps one. The model's inputs decide shapes and names;
:func:`check_io` checks the section against them when planning and building.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

SourceKind = Literal["client", "random", "npz", "npy", "images", "python"]
SinkKind = Literal["client", "none", "npz", "python"]
_CALLABLE = re.compile(r"^(?P<file>[A-Za-z0-9_./-]+\.py):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")
_BOARD_PATH = re.compile(r"^[^\x00-\x1f]+$")
_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _shorthand(data: Any, kinds: tuple[str, ...]) -> Any:
    """``client`` -> ``{kind: client}``; ``{npz: P}`` -> ``{kind: npz, path: P}``;
    ``{python: f.py:fn}`` -> ``{kind: python, callable: f.py:fn}``."""
    if isinstance(data, str):
        return {"kind": data}
    if isinstance(data, dict) and "kind" not in data and len(data) == 1:
        (key, value), = data.items()
        if key in kinds:
            return {"kind": key, "callable" if key == "python" else "path": value}
    return data


class _Endpoint(_Strict):
    path: str | None = Field(default=None, min_length=1,
                             description="A file or folder on the board.")
    callable: str | None = Field(default=None, description="module.py:function beside the "
                                                            "manifest (shipped in app/).")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _BOARD_PATH.match(value):
            raise ValueError(f"{value!r} is not a path")
        return value

    @field_validator("callable")
    @classmethod
    def _callable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        m = _CALLABLE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not module.py:function")
        ctx = info.context if isinstance(info.context, dict) else {}
        file = Path(os.path.normpath(Path(ctx.get("base_dir") or ".") / m["file"]))
        if not file.is_file():
            raise ValueError(f"{file} not found (paths are relative to the manifest's folder)")
        return f"{file}:{m['fn']}"

    def _needs(self, kind: str, wants_path: tuple[str, ...]) -> None:
        if kind in wants_path and not self.path:
            raise ValueError(f"{kind} needs a path on the board, e.g. {{{kind}: /data/x}}")
        if kind == "python" and not self.callable:
            raise ValueError("python needs a callable, e.g. {python: camera.py:frames}")
        if kind not in wants_path and self.path:
            raise ValueError(f"{kind} takes no path")


class IoSource(_Endpoint):
    """Where frames come from."""

    kind: SourceKind = "client"
    seed: int = Field(default=0, ge=0, description="random: the seed of its frames.")

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return _shorthand(data, ("npz", "npy", "images", "python"))

    @model_validator(mode="after")
    def _complete(self) -> IoSource:
        self._needs(self.kind, ("npz", "npy", "images"))
        return self


class IoSink(_Endpoint):
    """Where results go."""

    kind: SinkKind = "client"

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return _shorthand(data, ("npz", "python"))

    @model_validator(mode="after")
    def _complete(self) -> IoSink:
        self._needs(self.kind, ("npz",))
        return self


class Preprocess(_Strict):
    """How an image becomes the model's input: resized to the input's own height and width,
    multiplied by ``scale``, then ``(x - mean) / std`` per channel."""

    layout: Literal["nchw", "nhwc"] | None = Field(
        default=None, description="The input tensor's layout. Default: the model's own (nhwc "
        "for a .tflite model's image input, nchw for an ONNX one's), as the runner takes it.")
    channel_order: Literal["rgb", "bgr", "gray"] | None = Field(
        default=None, description="Default: rgb for 3 channels, gray for 1.")
    scale: float = Field(default=1.0 / 255.0, gt=0)
    mean: list[float] = Field(default_factory=lambda: [0.0], min_length=1, max_length=4)
    std: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=4)
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"
    resize: Literal["bilinear", "nearest"] = "bilinear"

    @field_validator("std")
    @classmethod
    def _std(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value


class Io(_Strict):
    """Frames in and results out of the deployed runner (see the module doc)."""

    source: IoSource = Field(default_factory=IoSource, description="client (default), random, "
                             "{npz: P}, {npy: P}, {images: DIR}, {python: f.py:fn}.")
    sink: IoSink | None = Field(default=None, description="client with source client (the "
                                "default), else none (default), {npz: DIR}, {python: f.py:fn}.")
    listen: str = Field(default="unix", description="unix (the run dir's runner.sock), "
                        "unix:///PATH on the board, or tcp://HOST:PORT (needs token_file).")
    token_file: str | None = Field(default=None, min_length=1,
                                   description="A file on the board holding the TCP token.")
    window: int = Field(default=8, ge=1, le=256, description="Frames a client may have in "
                        "flight (backpressure beyond).")
    max_clients: int = Field(default=16, ge=1, le=1024)
    max_frame_mb: float | None = Field(default=None, gt=0, le=4096,
                                       description="Refuse larger frames (default: twice the "
                                                   "model's input bytes).")
    loop: bool = Field(default=False, description="npz/npy/images: cycle instead of finishing.")
    preprocess: Preprocess | None = Field(default=None, description="Images to tensors, on the "
                                          "board (images source) and for `edgedeploy infer`.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        tcp = _TCP.match(value)
        if tcp and int(tcp[2]) > 65535:
            raise ValueError(f"{value!r}: the port must be at most 65535")
        if value == "unix" or tcp:
            return value
        if value.startswith("unix://") and value[len("unix://"):].startswith(("/", "~")):
            return value
        raise ValueError(f"{value!r} is not unix, unix:///PATH or tcp://HOST:PORT")

    @model_validator(mode="after")
    def _consistent(self) -> Io:
        sink = self.sink.kind if self.sink is not None else None
        if self.source.kind == "client" and sink not in (None, "client"):
            raise ValueError("with source client the results return to the client: drop sink "
                             "or set source to a feed on the board")
        if self.source.kind != "client" and sink == "client":
            raise ValueError(f"sink client needs source client (source is {self.source.kind})")
        tcp = self.listen.startswith("tcp://")
        if tcp and not self.token_file:
            from edgedeploy.schemas.manifest import HintedValueError

            raise HintedValueError("listen on TCP needs token_file: a file on the board holding "
                                   "the shared token", "the token itself never goes in the "
                                   "manifest; create the file on the board (chmod 600)")
        if self.token_file and not tcp:
            raise ValueError("token_file is only used with listen: tcp://HOST:PORT")
        return self

    @property
    def sink_kind(self) -> str:
        if self.sink is not None:
            return self.sink.kind
        return "client" if self.source.kind == "client" else "none"


def check_io(io: Io, inputs: list[tuple[str, tuple[int, ...], str]]) -> list[str]:
    """What in ``io`` does not fit the model's inputs (``(name, shape, dtype)``, as the runner
    takes them); empty: fine. ``io.preprocess.layout`` is resolved (:func:`with_layout`)."""
    problems = []
    images = io.source.kind == "images" or io.preprocess is not None
    if io.source.kind == "npy" and len(inputs) != 1:
        problems.append(f"source npy feeds one input; the model takes {len(inputs)} "
                        f"({', '.join(n for n, _, _ in inputs)}): use npz")
    if images:
        if len(inputs) != 1 or len(inputs[0][1]) != 4:
            shapes = ", ".join(f"{n} {list(s)}" for n, s, _ in inputs)
            problems.append(f"image preprocessing needs one 4-D image input; the model takes "
                            f"{shapes}")
            return problems
        prep = io.preprocess or Preprocess(layout="nchw")
        _, shape, dtype = inputs[0]
        channels = shape[1] if prep.layout == "nchw" else shape[3]
        order = prep.channel_order or ("rgb" if channels == 3 else "gray")
        want = 1 if order == "gray" else 3
        if channels != want:
            problems.append(f"preprocess {prep.layout} with channel_order {order} gives {want} "
                            f"channel(s); the model's input {list(shape)} has {channels} there "
                            "(check layout)")
        for key in ("mean", "std"):
            n = len(getattr(prep, key))
            if n not in (1, channels):
                problems.append(f"preprocess {key} has {n} values; give 1 or {channels}")
        if prep.dtype != dtype:
            problems.append(f"preprocess dtype {prep.dtype}; the model's input is {dtype}")
    return problems


def with_layout(io: Io, own: str) -> Io:
    """``io`` with its preprocessing's layout said, where images are read: the model input's
    own (``own``) unless the manifest gives one."""
    if io.preprocess is None:
        return (io.model_copy(update={"preprocess": Preprocess(layout=own)})
                if io.source.kind == "images" else io)
    if io.preprocess.layout is not None:
        return io
    return io.model_copy(update={"preprocess": io.preprocess.model_copy(update={"layout": own})})
