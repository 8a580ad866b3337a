"""Segment models for engines, cut from the source model on the host.

One cutter per segment file format (an engine declares the format it runs: onnxruntime and the GPU
engines ONNX, LiteRT .tflite); :func:`segment_provider` is what an executor on the host and the
bundle builder ask for "engine E's model of the layers between these tensors".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from edgedeploy.errors import InputError
from edgedeploy.runtime import ir
from edgedeploy.runtime.engines import engine_spec
from edgedeploy.runtime.vocab import ONNX, TFLITE

Cutter = Callable[[list[str], list[str]], bytes]


def _onnx_cutter(graph: ir.Graph, model_path: Path) -> Cutter:
    from edgedeploy.importers.onnx_cut import SegmentCutter

    cut = SegmentCutter.for_graph(graph, model_path)
    return lambda ins, outs: cut(ins, outs)


def _tflite_cutter(graph: ir.Graph, model_path: Path) -> Cutter:
    from edgedeploy.importers.tflite_context import to_tflite_shape
    from edgedeploy.importers.tflite_cut import cut_tflite

    data = Path(model_path).read_bytes()
    shapes = {name: to_tflite_shape(t.shape) for name, t in graph.tensors.items()}
    return lambda ins, outs: cut_tflite(data, ins, outs, shapes)


#: Segment file format -> (source format it is cut from, cutter factory).
CUTTERS: dict[str, Callable[[ir.Graph, Path], Cutter]] = {ONNX: _onnx_cutter,
                                                          TFLITE: _tflite_cutter}


Provider = Callable[[str, list[str], list[str]], bytes]


def segment_provider(graph: ir.Graph, model_path: str | Path | None, *,
                     dynamic_batch: bool = False, cut_by: Provider | None = None) -> Provider:
    """``(engine, inputs, outputs) -> segment model bytes`` for ``graph``'s source model.

    Cutters are built on first use; an engine whose segment format is not the model's own gets a
    clear InputError (onnxruntime cannot run a piece of a .tflite file). ``dynamic_batch``:
    ONNX segments get a free leading batch axis, for stages that micro-batch. Each segment is
    cut once (several contenders of a measurement run the same whole model), and callers may
    share a provider between threads. ``cut_by``: a provider of the same model without the
    batch axis, whose cuts this one's are made from: cutting VGG-16 whole takes 10 s, and
    contenders that micro-batch and those that do not then pay for it once.
    """
    fmt = str(graph.source.get("format") or ONNX)
    cutters: dict[str, Cutter] = {}
    made: dict[tuple[str, tuple[str, ...], tuple[str, ...]], bytes] = {}
    lock = threading.Lock()

    def provide(engine: str, inputs: list[str], outputs: list[str]) -> bytes:
        key = (engine, tuple(inputs), tuple(outputs))
        with lock:
            if key not in made:
                made[key] = cut(engine, list(inputs), list(outputs))
            return made[key]

    def cut(engine: str, inputs: list[str], outputs: list[str]) -> bytes:
        seg_fmt = engine_spec(engine).segment_format
        if seg_fmt != fmt or model_path is None:
            raise InputError(f"layers run on {engine}, which runs {seg_fmt or 'no'} segments, "
                             f"but the model is {fmt}",
                             hint="choose native primitives or an engine of the model's format")
        if cut_by is not None:
            model = cut_by(engine, list(inputs), list(outputs))
        else:
            if seg_fmt not in cutters:
                cutters[seg_fmt] = CUTTERS[seg_fmt](graph, Path(model_path))
            model = cutters[seg_fmt](list(inputs), list(outputs))
        if dynamic_batch and seg_fmt == ONNX:
            from edgedeploy.importers.onnx_batch import with_dynamic_batch

            model = with_dynamic_batch(model)
        return model

    return provide
