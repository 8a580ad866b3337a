"""Model importers: ONNX and TFLite files -> :class:`edgedeploy.runtime.ir.Graph`.

:func:`load_model` is the one entry point the CLI and the API use; it picks the importer from an
explicit format, the file suffix, or the file's magic bytes (TFLite flatbuffers carry ``TFL3`` at
offset 4), in that order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError, ModelError
from edgedeploy.runtime.ir import Graph
from edgedeploy.runtime.vocab import MODEL_SUFFIXES

__all__ = ["FORMATS", "SHAPE_HINT", "ShapeOverride", "check_model_file", "detect_format",
           "load_model", "parse_input_shapes", "parse_shape", "plan_shapes"]

#: One shape (for the only, the named, or the only dynamic input) or input name -> shape.
ShapeOverride = Sequence[int] | Mapping[str, Sequence[int]]
#: What an error about a model input's dynamic dimensions tells the user to do.
SHAPE_HINT = ("pass --input-shape on the command line, in the model's own layout (N,C,H,W for an "
              "ONNX image, N,H,W,C for a .tflite one; name=1x3x224x224,mask=1x10 for "
              "several inputs), or model.input_shape / model.input_shapes in the manifest")

FORMATS = ("onnx", "tflite")


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """``fmt`` if given, else from the suffix, else from the magic bytes."""
    path = Path(path)
    if fmt is not None:
        norm = fmt.lower().lstrip(".")
        if norm not in FORMATS:
            raise InputError(f"unknown model format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
        return norm
    if path.suffix.lower() in MODEL_SUFFIXES:
        return MODEL_SUFFIXES[path.suffix.lower()]
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}",
                         "check the path and its permissions") from exc
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: how every .onnx starts
        return "onnx"
    raise ModelError(f"cannot tell the format of {path}",
                     "name it .onnx or .tflite, or give the format explicitly")


def load_model(path: str | Path, *, input_shape: ShapeOverride | None = None,
               input_name: str | None = None, fmt: str | None = None) -> Graph:
    """Import a model file into the IR, whatever its format.

    ``input_shape`` fixes dynamic dimensions: one shape (for ``input_name``, the only input or
    the only dynamic one) or a mapping input name -> shape for several inputs.
    Raises :class:`ModelError` (exit code 2) for a missing, unreadable or corrupt file, and
    :class:`InputError` for dynamic input dims without ``input_shape``.
    """
    path = check_model_file(path)
    kind = detect_format(path, fmt)
    if kind == "tflite":
        from edgedeploy.importers.tflite import import_tflite

        return import_tflite(path, input_shape=input_shape, input_name=input_name)
    from edgedeploy.importers.onnx import import_onnx

    return import_onnx(path, input_shape=input_shape, input_name=input_name)


def check_model_file(path: str | Path) -> Path:
    """``path``, where it is a model file that is there and not empty; else :class:`ModelError`
    saying which (a missing one named like a zoo model gets the command that writes it)."""
    path = Path(path)
    if not path.exists():
        from edgedeploy import zoo

        rule = "check the path (relative to the current directory, or to the manifest for " \
               "manifest paths)"
        command = zoo.export_hint(path)
        raise ModelError(f"model file not found: {path}", f"{command}; {rule}" if command else rule)
    if not path.is_file():
        raise ModelError(f"not a model file: {path}", "give the path of an .onnx or .tflite file")
    if path.stat().st_size == 0:
        raise ModelError(f"model file is empty: {path}", "re-export or re-download it")
    return path


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (also ``1x3x224x224`` or with spaces) -> ``(1, 3, 224, 224)``."""
    cleaned = text.strip().strip("()[]").replace("x", ",").replace(" ", ",")
    parts = [p for p in cleaned.split(",") if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"bad shape {text!r}",
                         "give positive integers separated by commas, e.g. 1,3,224,224")
    return dims


#: A comma that starts the next ``name=`` entry (the name holds no comma or '=').
_NEXT_ENTRY = re.compile(r"[;\s]+(?=[^,;=\s]+=)|,(?=[^,;=]+=)")


def parse_input_shapes(text: str) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
    """``"1,3,224,224"`` -> one shape; ``"input=1x3x224x224,mask=1x10"`` (``;`` or spaces also
    separate the entries) -> ``{"input": (1, 3, 224, 224), "mask": (1, 10)}``."""
    if "=" not in text:
        return parse_shape(text)
    shapes: dict[str, tuple[int, ...]] = {}
    for entry in (e.strip() for e in _NEXT_ENTRY.split(text.strip())):
        if not entry:
            continue
        name, sep, dims = entry.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"bad input shape {entry!r} in {text!r}",
                             "give name=shape entries, e.g. input=1x3x224x224,mask=1x10")
        if name in shapes:
            raise InputError(f"input {name!r} is given two shapes in {text!r}")
        shapes[name] = parse_shape(dims)
    return shapes


def plan_shapes(model_block: Mapping[str, Any]) -> ShapeOverride | None:
    """The shape override a lockfile's ``model`` block records: every input's shape where it
    lists several (``input_shapes``), else the first input's (``input_shape``)."""
    many = model_block.get("input_shapes")
    if many:
        return {str(k): tuple(int(d) for d in v) for k, v in dict(many).items()}
    one = model_block.get("input_shape")
    return tuple(int(d) for d in one) if one else None
