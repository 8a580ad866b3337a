"""The onnxruntime engine: a graph segment (or a whole model) as one pinned onnxruntime session.

Threading follows the runtime issue: with ``cpus`` the session gets ``len(cpus)`` intra-op threads
(or ``threads``), one inter-op thread and sequential execution; the calling thread is pinned with
the process affinity (onnxruntime never pins thread 0) and the other threads through
``session.intra_op_thread_affinities`` (1-based CPU ids, one group per extra thread). Setting a
thread count drops onnxruntime's own default pinning, so both must be set together. When ``threads``
differs from ``len(cpus)`` the threads are not pinned one by one but float within the process's
CPU set. Such runner sessions on the CPU share one memory arena per process (see ``_options``).
``allow_spinning=False`` stops idle intra-op threads from spinning, for a stage that
shares its cores with another stage. With neither ``cpus`` nor ``threads`` every default is
left untouched: that is the "onnxruntime default session" baseline the planner compares against.
The default provider is ``CPUExecutionProvider``; pass ``providers`` for CUDA/TensorRT stages.

Memory (a stage's peak RSS is held to 1.5x its weights + live activations): a runner opens each
segment from its file (``model`` a path: onnxruntime reads it, no copy of the model stays in
Python), and from the most optimised form of it this board may use (``ort_files``: the board's
cache, the bundle's pre-optimised segment, the plain one); it gives the C heap's free pages back
after opening (``release_free_heap``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime import affinity
from edgedeploy.runtime.engines.base import (
    AFFINITY,
    SEGMENT,
    THREADS,
    WHOLE_MODEL,
    EngineOptions,
    EngineSpec,
    register_engine,
    require,
)
from edgedeploy.runtime.engines.ort_compile import optimize_in_child
from edgedeploy.runtime.engines.ort_files import (
    CPU_PROVIDER,
    EXTERNAL_MIN_BYTES,
    OPTIMIZED_SUFFIX,
    SAVE_DATA_KEY,
    SAVE_MIN_KEY,
    cache_ready,
    cached_model,
    discard,
    drop,
    in_release,
    optimized_for,
    optimized_paths,
    provider_names,
    publish,
    staging_dir,
)
from edgedeploy.runtime.errors import ExecutionError, ModelError
from edgedeploy.runtime.vocab import ONNX, ONNXRUNTIME, ORT_ERRORS_ONLY

AFFINITY_KEY = "session.intra_op_thread_affinities"
SPINNING_KEY = "session.intra_op.allow_spinning"
ENV_ALLOCATORS_KEY = "session.use_env_allocators"

__all__ = ["AFFINITY_KEY", "ENV_ALLOCATORS_KEY", "SPINNING_KEY", "OrtSegment",
           "optimized_for", "optimized_paths", "ort_default_session", "release_free_heap",
           "shared_cpu_arena"]


def _ort() -> Any:
    return require("onnxruntime", "onnxruntime", "the onnxruntime engine")


@functools.cache
def shared_cpu_arena() -> bool:
    """Register, once per process, the CPU arena every runner session on the CPU shares
    (``session.use_env_allocators``); False where this onnxruntime cannot, and runner sessions
    then go without an arena."""
    ort = _ort()
    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                 ort.OrtMemType.DEFAULT)
        # max_mem 0 (no limit), then onnxruntime's defaults: power-of-two extension,
        # its initial chunk and dead-bytes rule.
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
    except Exception:  # an onnxruntime without the API, or one already registered elsewhere
        return False
    return True


class OrtSegment:
    """One onnxruntime session over an ONNX model (bytes or a path), pinned to ``cpus``."""

    name = ONNXRUNTIME
    capabilities = frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY})

    def __init__(self, model: bytes | str | Path, *, cpus: Sequence[int] | None = None,
                 threads: int | None = None, providers: Sequence[Any] | None = None,
                 allow_spinning: bool = True, prefer_optimized: bool = False,
                 cache_dir: str | Path | None = None) -> None:
        ort = _ort()
        self.cpus = list(cpus) if cpus is not None else None
        self.threads = threads
        self._spinning = allow_spinning
        self._providers = list(providers or [CPU_PROVIDER])
        self._cpu_only = provider_names(self._providers) == [CPU_PROVIDER]
        self.options = self._options(ort, allow_spinning, self._cpu_only)
        if self.cpus:
            affinity.pin_process(self.cpus)
        #: The file the session was opened from (None for model bytes); why the segment's
        #: pre-optimised form was not used when one was wanted ("" when it was, or not
        #: wanted); and whether that file is this board's cached, fully optimised form.
        self.model_path: Path | None = None if isinstance(model, bytes) else Path(model)
        self.fallback = ""
        self.cached = False
        #: A first start had a child process optimise the segment (``ort_compile``), or why
        #: the segment was optimised in this process instead ("" when neither happened).
        self.child_optimized = False
        self.child_failure = ""
        self.child_peak_rss = 0
        self.optimized_from: Path | None = None  # what the child optimised
        session = None
        if prefer_optimized and self.model_path is not None:
            session = self._open_best(ort, self.model_path, cache_dir)
        if session is None:
            try:
                session = ort.InferenceSession(
                    model if isinstance(model, bytes) else str(model), self.options,
                    providers=self._providers)
            except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/NoSuchFile types
                what = "the model bytes" if isinstance(model, bytes) else str(model)
                raise ModelError(f"onnxruntime cannot load {what}: {exc}") from exc
        self.session = session
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._input_types = {i.name: i.type for i in self.session.get_inputs()}
        self._widths = [_FLOAT_INPUTS.get(self._input_types[n]) for n in self.input_names]

    def _open_best(self, ort: Any, segment: Path, cache_dir: str | Path | None) -> Any:
        """A session over the most optimised form of ``segment`` this board may use (see
        ``ort_files``), writing the board's cache on a first start; None: open the plain one."""
        cache = None
        if cache_dir is not None and self._cpu_only:
            cache = cached_model(cache_dir, segment, ort.__version__)
            if cache_ready(cache):
                session = self._try(ort, cache)
                if session is not None:
                    self.cached = True
                    return session
                drop(cache)  # damaged: written again below
        source, self.fallback = optimized_for(segment, ort.__version__, self._providers)
        # a release's first start on this board: keep what the optimizer makes of the segment,
        # made in a child process (its peak ends with it), else here as it opens
        save = cache if cache is not None and in_release(cache.parent) else None
        if save is not None:
            self.optimized_from = source or segment
            child = optimize_in_child(self.optimized_from, save)
            self.child_failure, self.child_peak_rss = child.failure, child.peak_rss
            if not self.child_failure and (session := self._try(ort, save)) is not None:
                self.cached = self.child_optimized = True
                return session
        for path in ([source] if source is not None else []) + ([segment] if save else []):
            session = self._try(ort, path, save_to=save)
            if session is not None:
                return session
        return None

    def _try(self, ort: Any, path: Path, save_to: Path | None = None) -> Any:
        """A session over ``path`` (saving its optimised graph as ``save_to``), or None."""
        opts = self.options
        staged = None
        if save_to is not None:
            try:
                staged = staging_dir(save_to) / save_to.name
            except OSError:  # a read-only release: no cache, nothing else changes
                return self._try(ort, path)
            opts = self._options(ort, self._spinning, self._cpu_only)
            opts.log_severity_level = ORT_ERRORS_ONLY  # warns the graph fits this CPU, as meant
            opts.optimized_model_filepath = str(staged)
            opts.add_session_config_entry(SAVE_DATA_KEY, f"{save_to.name}.data")
            opts.add_session_config_entry(SAVE_MIN_KEY, str(EXTERNAL_MIN_BYTES))
        try:
            session = ort.InferenceSession(str(path), opts, providers=self._providers)
        except Exception as exc:  # a damaged optimised file: a plainer one serves
            self.fallback = self.fallback or f"onnxruntime refused {path.name}: {exc}"
            if staged is not None:
                discard(staged)
            return None
        if staged is not None:
            publish(staged, save_to)
        self.model_path = path
        return session

    @property
    def optimized(self) -> bool:
        """The session runs the segment's pre-optimised form shipped in the bundle (``cached``:
        this board's own optimised form of it)."""
        return self.model_path is not None and self.model_path.name.endswith(OPTIMIZED_SUFFIX)

    def _options(self, ort: Any, allow_spinning: bool, cpu_only: bool) -> Any:
        opts = ort.SessionOptions()
        # errors only, in every session alike: onnxruntime warns of what it tidies in the
        # model each time a session opens it (a Caffe2 export's unused initializer: 11 lines
        # among one plan of Inception v1's progress), and of a declared output shape the
        # model does not keep on every run (ddddocr's OCR model: 326 lines in one bench)
        opts.log_severity_level = ORT_ERRORS_ONLY
        if self.cpus is None and self.threads is None:
            return opts  # onnxruntime's defaults for all it computes with: the baseline session
        n = int(self.threads or len(self.cpus or [])) or 1
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Memory: a session's own CPU arena grows in power-of-two chunks and never shrinks
        # (+13 MB for MobileNetV2, +28 MB for ResNet-50 per stage, one arena per segment), and
        # without one every frame maps its activations afresh (page faults: 5-30 % more CPU
        # time per frame). One arena shared by every CPU session of the process serves the
        # segments one after another, so it holds one segment's activations, not all of them.
        # The memory pattern (a per-shape plan of one block per run) is off: in the shared
        # arena it measured more memory (MobileNetV2 +2 MB) and no faster.
        opts.enable_cpu_mem_arena = False
        if cpu_only and shared_cpu_arena():
            opts.enable_cpu_mem_arena = True
            opts.enable_mem_pattern = False
            opts.add_session_config_entry(ENV_ALLOCATORS_KEY, "1")
        # One CPU per thread when the counts agree; otherwise the threads float within the
        # process affinity (threads inherit it from the pinned calling thread).
        if self.cpus and n > 1 and n == len(self.cpus):
            opts.add_session_config_entry(AFFINITY_KEY, affinity.ort_thread_affinities(self.cpus))
        if not allow_spinning:
            opts.add_session_config_entry(SPINNING_KEY, "0")
        return opts

    @property
    def intra_op_threads(self) -> int:
        """The intra-op thread count the session was given (0 means onnxruntime chooses)."""
        return int(self.session.get_session_options().intra_op_num_threads)

    def config_entry(self, key: str) -> str | None:
        """A session config entry as the live session reports it (None when unset)."""
        try:
            return self.session.get_session_options().get_session_config_entry(key)
        except Exception:  # onnxruntime raises when the key was never set
            return None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ExecutionError(
                f"onnxruntime segment is missing input(s) {missing}",
                hint=f"it expects {self.input_names}, got {sorted(inputs)}")
        feeds = {n: self._as_input(n, inputs[n]) for n in self.input_names}
        try:
            outs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            shapes = {n: tuple(v.shape) for n, v in feeds.items()}
            raise ExecutionError(f"onnxruntime failed on inputs {shapes}: {exc}") from exc
        return dict(zip(self.output_names, outs, strict=True))

    def run_ordered(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`run` for inputs in :attr:`input_names`' order, outputs in
        :attr:`output_names`': the session's own call, a float input cast where its width
        differs (as :meth:`run` does), as a user's loop makes it. What the session refuses
        goes the checked way, for its error."""
        feeds = {}
        for name, x, want in zip(self.input_names, xs, self._widths, strict=True):
            feeds[name] = x if want is None or x.dtype == want or x.dtype.kind != "f" \
                else x.astype(want)
        try:
            return self.session.run(None, feeds)
        except Exception:  # onnxruntime's own error types
            out = self.run(dict(zip(self.input_names, xs, strict=True)))
            return [out[n] for n in self.output_names]

    def _as_input(self, name: str, value: np.ndarray) -> np.ndarray:
        # A float array of another width than the input's is cast: float64 (numpy's default)
        # fed to a float input is a common slip, and an fp16 model's input is fed the float32
        # frames a camera pipeline (and every native layer) makes
        want = _FLOAT_INPUTS.get(self._input_types.get(name, ""))
        if want is not None and value.dtype != want and value.dtype.kind == "f":
            value = value.astype(want)
        return np.ascontiguousarray(value)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OrtSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: onnxruntime's names of the float input types, and their numpy types.
_FLOAT_INPUTS = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
                 "tensor(double)": np.dtype(np.float64)}


def ort_default_session(path: bytes | str | Path) -> OrtSegment:
    """onnxruntime with every default (all cores, its own pinning) but the log level, errors
    only as every session here: the baseline a user runs."""
    return OrtSegment(path)


def _open(model: bytes | str, options: EngineOptions) -> OrtSegment:
    segment = OrtSegment(model, cpus=list(options.cpus) if options.cpus else None,
                         threads=options.threads, allow_spinning=options.allow_spinning,
                         prefer_optimized=True, cache_dir=options.cache_dir)
    release_free_heap()
    return segment


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``).

    Why: opening a session frees megabytes of small blocks (the graph optimizer's and layout
    transformer's intermediates) that glibc keeps resident for reuse, but a stage's later
    allocations are its activations, large blocks glibc maps afresh: the kept pages only raised
    the stage's peak (MobileNetV2: by 3 MB of a 19 MB budget). A no-op (False) off glibc.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


SPEC = register_engine(EngineSpec(
    ONNXRUNTIME, frozenset({SEGMENT, WHOLE_MODEL, THREADS, AFFINITY}), lambda: OrtSegment,
    backends=("onnxruntime",), formats=(ONNX,), segment_format=ONNX,
    precisions=("fp32", "int8"), runs_opaque=True, requires=("onnxruntime",), open=_open))
