"""int8 vs fp32 (only `make bench`): each zoo model quantized the way `model.precision: int8`
does it (planner.precision.quantize), checked by the same accuracy guard, and both whole models
timed in onnxruntime on one pinned thread by the project's one estimator (benchmarks.estimator):
the same frames, the same warm-up, rounds alternated. Writes results/precision_int8.json.
Calibration is seeded noise (the zoo's weights are seeded, not trained): the guard's error is
what noise frames show, top-1 agreement is weak evidence. Reported, not asserted. Beside it,
fp16 against fp32 in onnxruntime and in LiteRT (results/precision_fp16*.json), and `auto`
planned beside its baselines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgedeploy import zoo
from edgedeploy.benchmarks.estimator import summarise, timed_round
from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.precision import guard, quantize
from edgedeploy.runtime.affinity import available_cpus, pin_process

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "precision_int8.json"
MODELS = os.environ.get("EDGEDEPLOY_PRECISION_MODELS", "resnet50,mobilenet_v2,squeezenet1_1")
ROUNDS, WARMUP = 5, 3
FRAMES = {"resnet50": 20}


def _session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture
def one_core() -> Iterator[None]:
    """This process on its first core, for one benchmark; every core again after it (the
    benchmarks after it plan for every core)."""
    every = available_cpus()
    pin_process([every[0]])
    try:
        yield
    finally:
        pin_process(every)


def test_int8_beside_fp32_on_zoo_models(tmp_path: Path, one_core: None) -> None:
    _int8_beside_fp32(tmp_path)


def _alternated(sessions: dict, frames: list[dict], n: int) -> dict:  # type: ignore[type-arg]
    """Each session's summary over ROUNDS windows of ``n`` frames, rounds alternated."""
    windows: dict[str, list] = {k: [] for k in sessions}  # type: ignore[type-arg]
    for r in range(ROUNDS):
        for key in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            s = sessions[key]

            def process(count: int, frame, s=s) -> np.ndarray:  # type: ignore[no-untyped-def]
                done = np.empty(count)
                for k in range(count):
                    s.run(None, frame(k))
                    done[k] = time.perf_counter()
                return done

            windows[key].append(timed_round(process, lambda k: frames[k % len(frames)], n,
                                            WARMUP))
    return {k: summarise(w) for k, w in windows.items()}


def _int8_beside_fp32(tmp_path: Path) -> None:
    rows = {}
    for name in MODELS.split(","):
        fp32 = zoo.export(name, tmp_path / f"{name}.onnx", size=224)
        sess = _session(fp32)
        (inp,) = sess.get_inputs()
        rng = np.random.default_rng(0)
        frames = [{inp.name: rng.standard_normal(inp.shape).astype(np.float32)}
                  for _ in range(10)]
        int8 = tmp_path / f"{name}.int8.onnx"
        quantize(fp32, int8, frames[:8])
        checked = guard(fp32, int8, frames[8:])
        n = FRAMES.get(name, 60)
        summary = _alternated({"fp32": sess, "int8": _session(int8)}, frames[:8], n)
        rows[name] = {
            "input": list(inp.shape), "frames_per_round": n, "rounds": ROUNDS, "warmup": WARMUP,
            "guard": {"max_rel_error": checked.max_error,
                      "top1_agreement": checked.top1_agreement, "frames": checked.frames},
            **{k: {"median_fps": v.median_fps, "min_fps": v.min_fps, "max_fps": v.max_fps}
               for k, v in summary.items()},
            "speedup": summary["int8"].median_fps / summary["fp32"].median_fps}
        print(name, json.dumps(rows[name]), flush=True)
    OUT.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_precision_bench.py -p no:cacheprovider -s",
        "written_by": "tests/bench/test_precision_bench.py (make bench)",
        "how": "onnxruntime, one intra-op thread pinned to one core; the one estimator "
               "(frames over wall time), same frames and warm-up, rounds alternated",
        "calibration": "8 seeded standard-normal frames; guard on 2 held-out frames",
        "models": rows}, indent=1) + "\n")
    assert all(r["fp32"]["median_fps"] > 0 for r in rows.values())


FP16_OUT = ROOT / "results" / "precision_fp16.json"


def test_fp16_beside_fp32_in_onnxruntime(tmp_path: Path, one_core: None) -> None:
    """What fp16 gains in onnxruntime on this host: ResNet-50 converted to fp16
    (onnxruntime's own converter, inputs and outputs kept float32) beside the float32 model,
    each in onnxruntime on one pinned thread by the one estimator, rounds alternated, with the
    CPU's fp16 flags and the element types of the graph onnxruntime actually runs (its
    optimised model). Writes results/precision_fp16.json; reported, not asserted."""
    import collections

    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = zoo.export("resnet50", tmp_path / "resnet50.onnx", size=224)
    fp16 = tmp_path / "resnet50.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(fp32), keep_io_types=True), fp16)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.optimized_model_filepath = str(tmp_path / "resnet50.fp16.ran.onnx")
    ort.InferenceSession(str(fp16), opts, providers=["CPUExecutionProvider"])
    ran = onnx.load(opts.optimized_model_filepath)
    kinds = collections.Counter(onnx.TensorProto.DataType.Name(t.data_type)
                                for t in ran.graph.initializer)
    sess = _session(fp32)
    (inp,) = sess.get_inputs()
    rng = np.random.default_rng(0)
    frames = [{inp.name: rng.standard_normal(inp.shape).astype(np.float32)} for _ in range(8)]
    summary = _alternated({"fp32": sess, "fp16": _session(fp16)}, frames, FRAMES["resnet50"])
    words = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    row = {"onnxruntime": ort.__version__,
           "cpu_flags": {f: f in words for f in ("avx512_fp16", "avx512_bf16", "amx_bf16",
                                                 "asimdhp", "fphp")},
           "weights_in_the_graph_onnxruntime_runs": dict(kinds),
           **{k: {"median_fps": v.median_fps, "min_fps": v.min_fps, "max_fps": v.max_fps}
              for k, v in summary.items()},
           "speedup": summary["fp16"].median_fps / summary["fp32"].median_fps}
    print("resnet50 fp16", json.dumps(row), flush=True)
    FP16_OUT.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_precision_bench.py -k "
                   "fp16_beside_fp32_in_onnxruntime -p no:cacheprovider -s",
        "written_by": "tests/bench/test_precision_bench.py (make bench)",
        "how": "onnxruntime, one intra-op thread pinned to one core; the one estimator "
               "(frames over wall time), same frames and warm-up, rounds alternated",
        "models": {"resnet50": row}}, indent=1) + "\n")
    assert row["fp32"]["median_fps"] > 0 and row["fp16"]["median_fps"] > 0


LITERT_FP16_OUT = ROOT / "results" / "precision_fp16_litert.json"
#: Float TFLite models of the third-party corpus that LiteRT runs without custom ops, never
#: tuned on (three of them with fp16 weights).
LITERT_FP16_MODELS = os.environ.get(
    "EDGEDEPLOY_FP16_TFLITE", "blazeface,face_landmark,pose_detection_sparse,selfie_segmentation")
#: XNNPACK delegate flags (``xnnpack_delegate.h``): its default signed and unsigned int8
#: kernels, plus FORCE_FP16 (every float operator computed in fp16 where it has fp16 kernels).
XNNPACK_QS8, XNNPACK_QU8, XNNPACK_FORCE_FP16 = 1, 2, 4


class _Interpreted:
    """LiteRT's Interpreter (what the LiteRT engine runs) on one thread, behind onnxruntime's
    ``run(None, feeds)``."""

    def __init__(self, path: Path) -> None:
        from edgedeploy.runtime.engines.litert import interpreter_class

        self.ip = interpreter_class()(model_path=str(path), num_threads=1)
        self.ip.allocate_tensors()
        self.inputs = self.ip.get_input_details()
        self.outputs = self.ip.get_output_details()

    def run(self, _names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for d in self.inputs:
            self.ip.set_tensor(d["index"], feeds[d["name"]])
        self.ip.invoke()
        return [self.ip.get_tensor(d["index"]) for d in self.outputs]


class _Compiled:
    """A LiteRT CompiledModel on one thread with ``xnnpack_flags``, the same interface; its
    buffers in the Interpreter's order of inputs and outputs (``like``)."""

    def __init__(self, path: Path, xnnpack_flags: int, like: _Interpreted) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.options import Options

        cpu = CpuOptions(num_threads=1, xnnpack_flags=xnnpack_flags)
        self.model = CompiledModel.from_file(str(path), options=Options(cpu_options=cpu))
        self.ins = self.model.create_input_buffers(0)
        self.outs = self.model.create_output_buffers(0)
        self.names = [d["name"] for d in like.inputs]
        self.sizes = [int(np.prod(d["shape"])) for d in like.outputs]

    def run(self, _names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for buffer, name in zip(self.ins, self.names, strict=True):
            buffer.write(feeds[name])
        self.model.run_by_index(0, self.ins, self.outs)
        return [b.read(n, np.float32) for b, n in zip(self.outs, self.sizes, strict=True)]


def test_fp16_beside_fp32_in_litert(one_core: None) -> None:
    """LiteRT's XNNPACK computing in fp16 (FORCE_FP16) beside the same CompiledModel in fp32 and
    the Interpreter the LiteRT engine runs today, each on one pinned thread by the one
    estimator, rounds alternated, on the corpus's float TFLite models; with fp16's largest
    error over the largest fp32 output on the frames (seeded noise). Writes
    results/precision_fp16_litert.json; reported, not asserted."""
    from edgedeploy.testing import thirdparty

    rows = {}
    for name in LITERT_FP16_MODELS.split(","):
        path = thirdparty.fetch(name)
        given = _Interpreted(path)
        rng = np.random.default_rng(0)
        frames = [{d["name"]: rng.standard_normal(d["shape"]).astype(np.float32)
                   for d in given.inputs} for _ in range(8)]
        sessions = {"fp32_interpreter": given,
                    "fp32": _Compiled(path, XNNPACK_QS8 | XNNPACK_QU8, given),
                    "fp16": _Compiled(path, XNNPACK_QS8 | XNNPACK_QU8 | XNNPACK_FORCE_FP16,
                                      given)}
        ref = [sessions["fp32"].run(None, f) for f in frames]
        half = [sessions["fp16"].run(None, f) for f in frames]
        scale = max(float(np.abs(y).max()) for ys in ref for y in ys) or 1.0
        error = max(float(np.abs(a - b).max()) for ra, rb in zip(ref, half, strict=True)
                    for a, b in zip(ra, rb, strict=True)) / scale
        summary = _alternated(sessions, frames, 100)
        rows[name] = {**{k: {"median_fps": v.median_fps, "min_fps": v.min_fps,
                             "max_fps": v.max_fps} for k, v in summary.items()},
                      "fp16_speedup": summary["fp16"].median_fps / summary["fp32"].median_fps,
                      "fp16_vs_interpreter": summary["fp16"].median_fps
                      / summary["fp32_interpreter"].median_fps,
                      "fp16_max_error_over_max_output": error}
        print(name, json.dumps(rows[name]), flush=True)
    words = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    LITERT_FP16_OUT.write_text(json.dumps({
        "command": "python -m pytest -q tests/bench/test_precision_bench.py -k "
                   "fp16_beside_fp32_in_litert -p no:cacheprovider -s",
        "written_by": "tests/bench/test_precision_bench.py (make bench)",
        "how": "LiteRT CompiledModel (XNNPACK, flags QS8|QU8, with and without FORCE_FP16) and "
               "the Interpreter, one thread pinned to one core; the one estimator (frames over "
               "wall time), 100 frames a round after 3, 5 rounds alternated; 8 frames of seeded "
               "noise",
        "cpu_flags": {f: f in words for f in ("avx512_fp16", "asimdhp", "fphp")},
        "models": rows}, indent=1) + "\n")
    assert all(r["fp32"]["median_fps"] > 0 for r in rows.values())


PLAN_OUT = ROOT / "results" / "bench_precision.json"
PLAN_MODELS = os.environ.get("EDGEDEPLOY_PRECISION_PLAN_MODELS", "resnet50,mobilenet_v2")
PLAN_FRAMES = {"resnet50": 60}
AUTO_MANIFEST = """name: {name}
model:
  path: {name}.onnx
  precision: auto
  calibration: frames.npz
targets:
  local: {{board: local}}
"""


def _import_s(path: Path, repeats: int = 3) -> float:
    """Median seconds `edgedeploy` takes to import the model into its IR."""
    from edgedeploy.importers import load_model

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        load_model(path)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def test_auto_precision_plans_beside_fp32_and_int8_baselines(tmp_path: Path) -> None:
    """`edgedeploy bench` of a manifest with ``precision: auto`` (as a user plans it: the int8
    model quantized and guarded, then int8 and fp32 plans measured side by side on this host),
    measured beside what a user would otherwise run -- onnxruntime's default session and
    one-thread replicas on the fp32 model they have -- and the same two on the int8 file (what
    a user who quantized by hand would run), one estimator, rounds alternated in pairs.
    Writes results/bench_precision.json; reported, not asserted."""
    from edgedeploy.benchmarks.compare import BenchRequest, bench

    rows = {}
    for name in PLAN_MODELS.split(","):
        folder = tmp_path / name
        folder.mkdir()
        fp32 = zoo.export(name, folder / f"{name}.onnx", size=224)
        rng = np.random.default_rng(0)
        np.savez(folder / "frames.npz",
                 input=rng.standard_normal((10, 1, 3, 224, 224)).astype(np.float32))
        manifest = folder / "m.yaml"
        manifest.write_text(AUTO_MANIFEST.format(name=name))
        t = time.monotonic()
        answer = bench(manifest, BenchRequest(frames=PLAN_FRAMES.get(name, 200), rounds=6),
                       progress=print)
        seconds = time.monotonic() - t
        int8 = next((folder / "build" / "precision").glob("*.int8.*.onnx"))
        answer["import_s"] = {"fp32": _import_s(fp32), "int8": _import_s(int8)}
        answer["import_ratio"] = answer["import_s"]["int8"] / answer["import_s"]["fp32"]
        answer["bench_s"] = round(seconds, 1)
        rows[name] = answer
        print(f"{name}: precision {answer['precision']['chosen']}, "
              f"x{answer['ratio_vs_best_baseline']:.2f} vs {answer['best_baseline']}, "
              f"x{answer['ratio_vs_best_int8_baseline']:.2f} vs int8 "
              f"{answer['best_int8_baseline']}, import x{answer['import_ratio']:.2f}",
              flush=True)
        _write(PLAN_OUT, "test_auto_precision_plans_beside_fp32_and_int8_baselines", "",
               "10 seeded standard-normal frames (8 calibrate, 2 held out): the zoo's weights "
               "are seeded, so top-1 agreement is weak evidence", rows)
    assert all(r["results"][0]["throughput_fps"] > 0 for r in rows.values())


THIRDPARTY_OUT = ROOT / "results" / "bench_precision_thirdparty.json"
THIRDPARTY_MODELS = os.environ.get("EDGEDEPLOY_PRECISION_THIRDPARTY_MODELS",
                                   "yolov8n,ppocr_cls,ppocr_det")
THIRDPARTY_FRAMES = {"yolov8n": 60, "ppocr_det": 60}
THIRDPARTY_MANIFEST = """name: {name}
model:
  path: {file}
{shape}  precision: {precision}
  calibration: frames.npz
targets:
  local: {{board: local}}
"""


def test_auto_precision_on_real_third_party_models(tmp_path: Path) -> None:
    """The same `edgedeploy bench` with ``precision: auto`` on real trained models fetched as
    pinned files (none tuned on): whether int8 is planned is the guard's and the board's call.
    Calibration is seeded uniform [0, 1) noise shaped like their inputs (no real images reach
    this machine), so the guard's error is what noise shows. Writes
    results/bench_precision_thirdparty.json; reported, not asserted."""
    _bench_auto(tmp_path, THIRDPARTY_MODELS.split(","), THIRDPARTY_OUT,
                "test_auto_precision_on_real_third_party_models", "-k third_party ")


TFLITE_OUT = ROOT / "results" / "bench_precision_tflite.json"
TFLITE_MODELS = os.environ.get(
    "EDGEDEPLOY_PRECISION_TFLITE_MODELS",
    "pose_detection_sparse,face_detection_sparse,face_landmark,blazeface,oww_embedding_tflite")


def test_auto_precision_on_real_tflite_models(tmp_path: Path) -> None:
    """``precision: auto`` on real float TFLite models (MediaPipe's, with float16 and sparse
    weights, and openWakeWord's embedder): the AI Edge Quantizer's int8 model against the model
    as given, measured beside LiteRT threaded and replicated on both files. Writes
    results/bench_precision_tflite.json; reported, not asserted."""
    _bench_auto(tmp_path, TFLITE_MODELS.split(","), TFLITE_OUT,
                "test_auto_precision_on_real_tflite_models", "-k auto_precision_on_real_tflite ")


FP16_OUT = ROOT / "results" / "bench_precision_fp16.json"
FP16_MODELS = os.environ.get("EDGEDEPLOY_PRECISION_FP16_MODELS",
                             "blazeface,face_landmark,pose_detection_sparse,selfie_segmentation")


def test_fp16_precision_on_real_tflite_models(tmp_path: Path) -> None:
    """``precision: fp16`` on real float TFLite models, on a host whose cores compute fp16
    (skipped elsewhere): the model computed in fp16 where the guard accepts it, measured beside
    LiteRT threaded and replicated in fp32 (what the user runs) and in fp16 (what a user who
    knows XNNPACK's FORCE_FP16 runs). Writes results/bench_precision_fp16.json; reported, not
    asserted."""
    from edgedeploy.boards.detect import detect_local

    if not any(c.fp16_arithmetic for c in detect_local().clusters):
        pytest.skip("this host's cores compute no fp16")
    _bench_auto(tmp_path, FP16_MODELS.split(","), FP16_OUT,
                "test_fp16_precision_on_real_tflite_models", "-k fp16_precision ",
                precision="fp16")


def _bench_auto(tmp_path: Path, names: list[str], out: Path, test: str, select: str,
                precision: str = "auto") -> None:
    import shutil

    from edgedeploy.benchmarks.compare import BenchRequest, bench
    from edgedeploy.importers import load_model
    from edgedeploy.testing.thirdparty import fetch, spec

    rows = {}
    for name in names:
        model = spec(name)
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(fetch(name), folder / model.filename)
        shape = model.input_shape
        (given,) = load_model(folder / model.filename, input_shape=shape).inputs
        rng = np.random.default_rng(0)
        np.savez(folder / "frames.npz",
                 **{given.name: rng.random((10, *given.shape), dtype=np.float32)})
        manifest = folder / "m.yaml"
        manifest.write_text(THIRDPARTY_MANIFEST.format(
            name=name, file=model.filename, precision=precision,
            shape=f"  input_shape: {list(shape)}\n" if shape else ""))
        t = time.monotonic()
        try:
            answer = bench(manifest, BenchRequest(frames=THIRDPARTY_FRAMES.get(name, 200),
                                                  rounds=6), progress=print)
        except InfeasibleError as exc:  # fp16 that the guard refuses: reported as such
            answer = {"refused": exc.message}
        answer["bench_s"] = round(time.monotonic() - t, 1)
        answer["model_source"] = {"requirement": model.requirement, "member": model.member,
                                  "sha256": model.sha256, "exporter": model.exporter}
        rows[name] = answer
        prec = answer.get("precision") or {}
        print(f"{name}: " + (answer["refused"] if "refused" in answer else
                             f"precision {prec.get('chosen')} ({prec.get('reason')}), "
                             f"x{answer['ratio_vs_best_baseline']:.2f} vs "
                             f"{answer['best_baseline']}"), flush=True)
        _write(out, test, select, "10 seeded uniform [0, 1) frames (8 calibrate, 2 held out): "
               "no real images, so the guard's error is what noise frames show", rows)
    assert all(r["results"][0]["throughput_fps"] > 0 for r in rows.values() if "results" in r)


def _write(path: Path, test: str, select: str, calibration: str, rows: dict) -> None:
    """A bench's results file: the rows so far, with the command and test that wrote them."""
    path.write_text(json.dumps({
        "command": f"python -m pytest -q tests/bench/test_precision_bench.py {select}"
                   "-p no:cacheprovider -s",
        "written_by": f"tests/bench/test_precision_bench.py::{test} (make bench)",
        "calibration": calibration, "models": rows}, indent=1) + "\n")
