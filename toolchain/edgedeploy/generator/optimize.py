"""Segments shipped pre-optimised: onnxruntime's graph optimisations run once, at build time.

Why: a stage that opens a plain segment holds, during start-up, the model as read plus the copies
onnxruntime's optimizer makes (fused Conv+BN/activation weights, constant-folded initializers),
and some of those copies stay resident. Saving the optimised graph with its initializers in an
external file lets the stage's session map the weights from the file instead of copying them.

What is saved is onnxruntime's ``ORT_ENABLE_EXTENDED`` graph for the CPU provider: fusions that
hold on every machine running the same onnxruntime version, none of the ``ORT_ENABLE_ALL`` layout
rewrites (NCHWc blocking depends on the CPU's vector width; the board still applies them when it
opens the segment). The optimised graph is only valid for the onnxruntime version that wrote it
and for the CPU provider, so the plain segment always ships beside it and a sidecar
(``<k>.opt.json``, see :mod:`edgedeploy.runtime.engines.ort_files`) records the version: a
board whose onnxruntime differs, and the GPU engines, open the plain segment as before.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgedeploy.runtime.engines.ort_files import (
    EXTERNAL_MIN_BYTES,
    OPTIMIZED_LEVEL,
    OPTIMIZED_PROVIDER,
    SAVE_DATA_KEY,
    SAVE_MIN_KEY,
    optimized_paths,
)
from edgedeploy.runtime.vocab import ONNX, ORT_ERRORS_ONLY


def optimize_segment(model: bytes, name: str) -> dict[str, bytes] | None:
    """The pre-optimised files of the segment ``name`` (``app/segments/<k>.onnx``) as
    ``{relative path: bytes}``: the optimised graph, its external weights and the sidecar.

    None when onnxruntime is not installed here or cannot optimise the segment: the bundle then
    ships only the plain segment, which every board opens as before.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    rel = optimized_paths(name)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "plain.onnx"
        src.write_bytes(model)
        out = Path(tmp) / Path(rel["model"]).name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(out)
        opts.add_session_config_entry(SAVE_DATA_KEY, Path(rel["data"]).name)
        opts.add_session_config_entry(SAVE_MIN_KEY, str(EXTERNAL_MIN_BYTES))
        opts.log_severity_level = ORT_ERRORS_ONLY  # its warnings are about the host, not the bundle
        try:
            ort.InferenceSession(str(src), opts, providers=[OPTIMIZED_PROVIDER])
        except Exception:  # an op this host's onnxruntime lacks: ship the plain segment only
            return None
        if not out.is_file():
            return None
        files = {rel["model"]: out.read_bytes()}
        data = Path(tmp) / Path(rel["data"]).name
        if data.exists():  # absent when every initializer is small
            files[rel["data"]] = data.read_bytes()
    sidecar = {"model": Path(rel["model"]).name,
               "data": Path(rel["data"]).name if rel["data"] in files else None,
               "onnxruntime": str(ort.__version__), "level": OPTIMIZED_LEVEL,
               "providers": [OPTIMIZED_PROVIDER], "source_bytes": len(model)}
    files[rel["sidecar"]] = (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode()
    return files


def optimized_segments(segments: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
    """Pre-optimised files for every ONNX segment of a bundle (``{"format", "file", "model"}``
    entries, as ``generator.bundle`` lists them)."""
    files: dict[str, bytes] = {}
    for seg in segments:
        if seg.get("format") == ONNX and isinstance(seg.get("model"), bytes):
            files.update(optimize_segment(seg["model"], str(seg["file"])) or {})
    return files
