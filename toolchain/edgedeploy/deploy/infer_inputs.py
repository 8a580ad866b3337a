"""What ``edgedeploy infer`` sends: frames read from an .npz, an .npy, an image or a folder of
images (through the manifest's ``io.preprocess``), and what it writes back (an .npz of outputs).

Arrays: by input name in an .npz (a one-input model takes any single array), one array in an
.npy; either one frame (the input's shape, or it without its batch axis of size 1) or a stack of
frames on a new leading axis. Images: PNG/PPM/PGM are read by edgedeploy itself, other formats
through Pillow (installed with edgedeploy's matplotlib on a host).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.errors import InputError
from edgedeploy.runtime.preprocess import IMAGE_SUFFIXES, Preprocess, image_files, load_image
from edgedeploy.runtime.runner_io import frames_of
from edgedeploy.runtime.wire import TensorDesc


@dataclass
class Frames:
    """The frames of one input file or folder: ``count`` of them, ``labels`` naming each."""

    count: int
    labels: list[str]
    frames: Iterator[list[np.ndarray]]


def read_frames(path: str | Path, inputs: Sequence[TensorDesc],
                preprocess: Mapping[str, Any] | None) -> Frames:
    """The frames in ``path`` for a model taking ``inputs`` (see the module doc)."""
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return _images(files, inputs, preprocess)
    if not path.is_file():
        raise InputError(f"input not found: {path}", hint="give an .npz, .npy, image or folder")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        return _arrays(path, inputs)
    if suffix in IMAGE_SUFFIXES:
        return _images([path], inputs, preprocess)
    raise InputError(f"{path}: cannot tell what it holds from its suffix",
                     hint="give an .npz, .npy, an image (.png, .jpg, .ppm ...) or a folder")


def _arrays(path: Path, inputs: Sequence[TensorDesc]) -> Frames:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # .npy: one input
            if len(inputs) != 1:
                raise InputError(f"{path}: an .npy feeds one input; the model takes "
                                 f"{len(inputs)}", hint="use an .npz named by input")
            named = {inputs[0].name: loaded}
        else:
            with loaded as data:
                if len(inputs) == 1 and len(data.files) == 1:
                    named = {inputs[0].name: data[data.files[0]]}
                else:
                    named = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    missing = [t.name for t in inputs if t.name not in named]
    if missing:
        raise InputError(f"{path} has no arrays for inputs {missing}",
                         hint=f"name the arrays after the model's inputs: "
                              f"{', '.join(t.name for t in inputs)}")
    stacks = []
    for t in inputs:
        arr = named[t.name]
        stack = (frames_of(arr[None], t.shape) if arr.shape in (t.shape, t.shape[1:])
                 else frames_of(arr, t.shape))
        if stack is None:
            raise InputError(f"{path}: {t.name!r} has shape {list(arr.shape)}; the input takes "
                             f"{list(t.shape)} (or a stack of frames on a new first axis)")
        stacks.append(stack)
    count = min(len(s) for s in stacks)
    return Frames(count, [f"{path.name}[{k}]" for k in range(count)],
                  ([s[k] for s in stacks] for k in range(count)))


def _images(files: list[Path], inputs: Sequence[TensorDesc],
            preprocess: Mapping[str, Any] | None) -> Frames:
    if len(inputs) != 1:
        raise InputError(f"an image feeds one input; the model takes {len(inputs)}")
    prep = Preprocess.for_input(inputs[0].shape, preprocess)
    return Frames(len(files), [f.name for f in files],
                  ([prep(load_image(f))] for f in files))


def write_outputs(path: str | Path, names: Sequence[str], results: list[list[np.ndarray]]) -> None:
    """An .npz with one array per output name, frames stacked on the first axis."""
    path = Path(path)
    arrays = {n: np.stack([r[k] for r in results]) for k, n in enumerate(names)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def summarise(outputs: Sequence[np.ndarray], names: Sequence[str], top: int = 5
              ) -> dict[str, Any]:
    """One frame's outputs for people and ``--json``: shape, the top entries of the flattened
    output (index and value), and the values themselves when there are few."""
    out: dict[str, Any] = {}
    for name, arr in zip(names, outputs, strict=True):
        flat = arr.reshape(-1).astype(np.float64)
        order = np.argsort(-flat, kind="stable")[:top]
        entry: dict[str, Any] = {"shape": list(arr.shape),
                                 "top": [[int(i), float(flat[i])] for i in order]}
        if flat.size <= 16:
            entry["values"] = [float(v) for v in flat]
        out[name] = entry
    return out
