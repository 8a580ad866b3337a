"""Which operators of a LiteRT int8 model cost the most accuracy: the error each one adds.

The TFLite form of :mod:`edgedeploy.planner.sensitivity`. The float model (as the quantizer took
it: :func:`~edgedeploy.importers.tflite_quantize.float_model`) and its int8 model run the same
frames in LiteRT with every tensor kept (``experimental_preserve_all_tensors``). An int8 tensor
is read back to real values with its scale and zero point and compared with the float tensor of
the same name (the quantizer keeps an operator's output names), by the project's one error
measure. An operator's added error is its outputs' error less the largest error already on its
inputs. Operators are named by their scope (``tflite_quantize.op_scopes``), the name the
quantizer's recipes match, so the worst can be kept float.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from edgedeploy.importers.tflite import _ints
from edgedeploy.importers.tflite_cut import _parse
from edgedeploy.importers.tflite_quantize import float_model
from edgedeploy.runtime.executor import max_rel_error

#: Suffix the int8 model's own tensor carries where its float output took the plain name.
_INT8_SUFFIX = "_int8"


def _activations(data: bytes, frames: Sequence[dict[str, np.ndarray]]
                 ) -> dict[str, np.ndarray]:
    """Every float or integer-quantized tensor LiteRT holds after each frame, as real values
    stacked over ``frames`` (frames keyed by input tensor name, in TFLite layout)."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # it warns that keeping every tensor is for debugging
        warnings.simplefilter("ignore")
        it = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = it.get_tensor_details()
    seen: list[dict[str, np.ndarray]] = []
    for frame in frames:
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.ascontiguousarray(frame[d["name"]], dtype=d["dtype"]))
        it.invoke()
        values = {}
        for d in details:
            try:
                value = it.get_tensor(d["index"])
            except ValueError:  # never allocated
                continue
            scale, zero = d["quantization"]
            if d["dtype"] in (np.int8, np.uint8, np.int16) and scale:
                values[d["name"]] = (value.astype(np.float32) - zero) * scale
            elif d["dtype"] == np.float32:
                values[d["name"]] = value.copy()
        seen.append(values)
    names = set.intersection(*(set(v) for v in seen)) if seen else set()
    return {n: np.stack([v[n] for v in seen]) for n in names}


def added_errors(data: bytes, int8: bytes, frames: Sequence[dict[str, np.ndarray]]
                 ) -> dict[str, float]:
    """The error each operator of the int8 model ``int8`` adds (scope -> error, >= 0) on
    ``frames``; ``data`` is the float model it was quantized from."""
    source = float_model(data)
    model = _parse(source)
    sg = model.subgraphs[0]
    names = [t.name.decode() for t in sg.tensors]
    inputs = {names[i] for i in _ints(sg.inputs)}
    want, got = _activations(source, frames), _activations(int8, frames)

    def error(name: str) -> float | None:
        if name in inputs:
            return 0.0  # fed as given
        ours = name if name in got else name + _INT8_SUFFIX
        if name not in want or ours not in got or got[ours].shape != want[name].shape:
            return None
        return max_rel_error({name: got[ours]}, {name: want[name]})

    added = {}
    for op in sg.operators or []:
        outs = [names[i] for i in _ints(op.outputs) if i >= 0]
        out = [e for t in outs if (e := error(t)) is not None]
        if not out:
            continue
        before = [e for i in _ints(op.inputs) if i >= 0 and (e := error(names[i])) is not None]
        added["".join(f"{t};" for t in outs)] = max(0.0, max(out) - max(before, default=0.0))
    return added


__all__ = ["added_errors"]
