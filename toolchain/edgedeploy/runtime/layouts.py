"""IR <-> TFLite tensor layout at the edge of a LiteRT segment (numpy only, device side).

Why: the TFLite importer stores a rank-4 TFLite tensor (NHWC) as its NCHW transposition and keeps
every other rank in TFLite's own shape and element order. A runner that feeds IR arrays to a model
cut by :func:`edgedeploy.importers.tflite_cut.cut_tflite` converts rank-4 tensors only, both ways.
"""

from __future__ import annotations

import numpy as np

#: Axes that turn an IR (NCHW) rank-4 array into TFLite's NHWC, and back.
IR_TO_TFLITE = (0, 2, 3, 1)
TFLITE_TO_IR = (0, 3, 1, 2)


def ir_to_tflite(x: np.ndarray) -> np.ndarray:
    """An IR array as LiteRT wants it: rank 4 NCHW -> NHWC (contiguous); other ranks as is."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(IR_TO_TFLITE) if x.ndim == 4 else x)


def tflite_to_ir(x: np.ndarray) -> np.ndarray:
    """A LiteRT array as the IR holds it: rank 4 NHWC -> NCHW (contiguous); other ranks as is."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.transpose(TFLITE_TO_IR) if x.ndim == 4 else x)
