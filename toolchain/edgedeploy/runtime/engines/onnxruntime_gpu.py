"""GPU engines: onnxruntime with the CUDA or the TensorRT execution provider.

A GPU stage is one onnxruntime session over its segment whose first provider is the GPU's; its
feeding thread (the session's calling thread) is pinned to the one CPU core the plan gives the
stage. onnxruntime silently falls back to the CPU when a requested provider is missing, which would
turn a planned GPU stage into a slow CPU stage nobody asked for, so opening one refuses instead,
naming the provider and what the board's onnxruntime offers. TensorRT builds engines at start-up;
they are cached in ``cache_dir`` (inside the release) and fp16 is enabled only when the plan allows
it (the manifest's precision).
"""

from __future__ import annotations

from typing import Any

from edgedeploy.runtime.engines.base import (
    AFFINITY,
    SEGMENT,
    WHOLE_MODEL,
    EngineOptions,
    EngineSpec,
    register_engine,
    require,
)
from edgedeploy.runtime.engines.onnxruntime import OrtSegment
from edgedeploy.runtime.errors import ExecutionError
from edgedeploy.runtime.vocab import GPU, ONNX, ONNXRUNTIME_CUDA, ONNXRUNTIME_TENSORRT

CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def cuda_providers(options: EngineOptions) -> list[Any]:
    """The provider list of a CUDA stage (CPU last, for the few ops CUDA lacks)."""
    return [(CUDA_PROVIDER, {"device_id": int(options.device_id)}), CPU_PROVIDER]


def tensorrt_providers(options: EngineOptions) -> list[Any]:
    """The provider list of a TensorRT stage: TensorRT, then CUDA and CPU for what it rejects."""
    trt: dict[str, Any] = {"device_id": int(options.device_id),
                           "trt_fp16_enable": bool(options.fp16)}
    if options.cache_dir:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(options.cache_dir))
    return [(TENSORRT_PROVIDER, trt), *cuda_providers(options)]


def check_provider(provider: str, engine: str) -> None:
    """ExecutionError unless this machine's onnxruntime offers ``provider``."""
    ort = require("onnxruntime", "onnxruntime-gpu", f"the {engine} engine")
    offered = list(ort.get_available_providers())
    if provider not in offered:
        raise ExecutionError(
            f"the {engine} engine needs onnxruntime's {provider}, but this machine's onnxruntime "
            f"offers only {', '.join(offered)}",
            hint="install an onnxruntime-gpu build for this board's CUDA/JetPack, or re-plan "
                 "without the GPU (remove the engine from the board's `engines`)")


def _open(engine: str, provider: str, providers: Any) -> Any:
    def open_(model: bytes | str, options: EngineOptions) -> OrtSegment:
        check_provider(provider, engine)
        session = OrtSegment(model, cpus=list(options.cpus) if options.cpus else None,
                             threads=1, providers=providers(options))
        used = session.session.get_providers()
        if not used or used[0] != provider:
            raise ExecutionError(f"onnxruntime did not place the {engine} segment on {provider} "
                                 f"(session providers: {used})")
        session.name = engine
        return session
    return open_


_CAPS = frozenset({SEGMENT, WHOLE_MODEL, AFFINITY})
CUDA = register_engine(EngineSpec(
    ONNXRUNTIME_CUDA, _CAPS, lambda: OrtSegment, backends=("onnxruntime",), formats=(ONNX,),
    segment_format=ONNX, device=GPU, precisions=("fp32", "fp16"), providers=(CUDA_PROVIDER,),
    runs_opaque=True, requires=(f"provider:{CUDA_PROVIDER}",),
    open=_open(ONNXRUNTIME_CUDA, CUDA_PROVIDER, cuda_providers)))
TENSORRT = register_engine(EngineSpec(
    ONNXRUNTIME_TENSORRT, _CAPS, lambda: OrtSegment, backends=("onnxruntime",), formats=(ONNX,),
    segment_format=ONNX, device=GPU, precisions=("fp32", "fp16", "int8"),
    providers=(TENSORRT_PROVIDER, CUDA_PROVIDER), runs_opaque=True,
    requires=(f"provider:{TENSORRT_PROVIDER}", f"provider:{CUDA_PROVIDER}"),
    open=_open(ONNXRUNTIME_TENSORRT, TENSORRT_PROVIDER, tensorrt_providers)))
