"""What an onnxruntime stage holds: segments opened from their files, pre-optimised where the
bundle ships them for this onnxruntime (the plain segment otherwise, with equal outputs), one
CPU arena shared by a process's sessions, and Winograd packing without whole-layer float64
temporaries."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.benchmarks.memory import write_stage_bundle
from edgedeploy.generator.optimize import optimize_segment, optimized_segments
from edgedeploy.runtime import affinity
from edgedeploy.runtime.engines import EngineOptions, open_segment
from edgedeploy.runtime.engines.onnxruntime import (
    ENV_ALLOCATORS_KEY,
    OrtSegment,
    optimized_for,
    optimized_paths,
    ort_default_session,
    release_free_heap,
)
from edgedeploy.runtime.engines.ort_files import cache_ready, cached_model
from edgedeploy.runtime.executor import max_rel_error

MIB = 2**20
X = np.random.default_rng(1).standard_normal((1, 32, 24, 24)).astype(np.float32)


@pytest.fixture(autouse=True)
def restore_affinity():
    before = affinity.available_cpus()
    yield
    affinity.pin_process(before)


def block_model(channels: int = 32, width: int = 512) -> bytes:
    """Conv3x3 + BatchNorm + Relu, then a 1x1 Conv to ``width`` channels: what onnxruntime's
    extended optimizer fuses (Conv+BN folded, Conv+Relu into FusedConv)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3))
                                .astype(np.float32) * 0.1, "w1"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "bias"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.random(channels).astype(np.float32) + 0.5, "var"),
        numpy_helper.from_array(rng.standard_normal((width, channels, 1, 1))
                                .astype(np.float32) * 0.1, "w2"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 24, 24])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width, 24, 24])
    graph = helper.make_graph(nodes, "block", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def bundle_segment(tmp_path: Path, model: bytes, optimize: bool = True) -> Path:
    """``app/segments/0.onnx`` (and its pre-optimised files) as a bundle ships them."""
    rel = "app/segments/0.onnx"
    files = {rel: model, **((optimize_segment(model, rel) or {}) if optimize else {})}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path / rel


def runner_segment(path: Path) -> OrtSegment:
    return open_segment("onnxruntime", str(path), EngineOptions(threads=1))  # type: ignore


def test_a_segment_opens_from_its_file_without_its_bytes_entering_python(tmp_path):
    model = block_model(channels=64, width=2048)  # ~0.5 MB of weights
    path = tmp_path / "seg.onnx"
    path.write_bytes(model)
    tracemalloc.start()
    try:
        runner_segment(path)
        from_path = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        OrtSegment(path.read_bytes(), threads=1)  # what the engine must not do
        from_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert from_bytes >= len(model)  # the measure sees a Python copy of the model ...
    assert from_path < len(model) / 4  # ... and opening from the path makes none


def test_a_bundled_preoptimized_segment_is_used_and_matches_the_plain_one(tmp_path):
    model = block_model()
    path = bundle_segment(tmp_path, model)
    meta = json.loads(Path(optimized_paths(path)["sidecar"]).read_text())
    assert meta["onnxruntime"] == ort.__version__ and meta["providers"] == ["CPUExecutionProvider"]
    assert (path.parent / meta["data"]).stat().st_size > 0  # the weights live outside the graph
    seg = runner_segment(path)
    assert seg.optimized and seg.fallback == ""
    assert seg.model_path == path.parent / "0.opt.onnx"
    plain = ort_default_session(model).run({"x": X})
    assert max_rel_error(seg.run({"x": X}), plain) <= 1e-4


@pytest.mark.parametrize("spoil, why", [
    (lambda p: _edit_sidecar(p, onnxruntime="0.0.1"), "onnxruntime 0.0.1"),
    (lambda p: _edit_sidecar(p, source_bytes=1), "another version"),
    (lambda p: Path(optimized_paths(p)["model"]).write_bytes(b"damaged"), "refused"),
    (lambda p: Path(optimized_paths(p)["data"]).unlink(), "lacks"),
    (lambda p: Path(optimized_paths(p)["sidecar"]).write_text("{"), "unreadable"),
])
def test_a_preoptimized_segment_this_onnxruntime_cannot_use_falls_back_to_the_plain_one(
        tmp_path, spoil, why):
    model = block_model()
    path = bundle_segment(tmp_path, model)
    spoil(path)
    seg = runner_segment(path)
    assert not seg.optimized and seg.model_path == path
    assert why in seg.fallback
    plain = ort_default_session(model).run({"x": X})
    assert max_rel_error(seg.run({"x": X}), plain) <= 1e-4


def _edit_sidecar(segment: Path, **changes) -> None:
    sidecar = Path(optimized_paths(segment)["sidecar"])
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))


def test_only_cpu_sessions_of_the_same_onnxruntime_take_the_preoptimized_form(tmp_path):
    path = bundle_segment(tmp_path, block_model())
    version = ort.__version__
    assert optimized_for(path, version, ["CPUExecutionProvider"])[0] is not None
    gpu = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert optimized_for(path, version, gpu) == (
        None, "pre-optimised for ['CPUExecutionProvider'], the session uses "
              "['CUDAExecutionProvider', 'CPUExecutionProvider']")
    assert optimized_for(path.with_name("9.onnx"), version, ["CPUExecutionProvider"]) == (
        None, "no pre-optimised segment")
    # a plain session (the baseline, or a caller not asking for it) opens what it was given
    assert not OrtSegment(path, threads=1).optimized


def test_bundles_ship_every_onnx_segment_preoptimized_beside_the_plain_one():
    model = block_model()
    files = optimized_segments([
        {"format": "onnx", "file": "app/segments/3.onnx", "model": model},
        {"format": "tflite", "file": "app/segments/4.tflite", "model": b"tflite"}])
    assert sorted(files) == ["app/segments/3.opt.json", "app/segments/3.opt.onnx",
                             "app/segments/3.opt.onnx.data"]
    assert files == optimized_segments([{"format": "onnx", "file": "app/segments/3.onnx",
                                         "model": model}])  # deterministic bytes
    assert json.loads(files["app/segments/3.opt.json"])["source_bytes"] == len(model)


def test_a_runner_stage_opens_its_segments_preoptimized_with_the_plain_stage_outputs(tmp_path):
    from edgedeploy import zoo
    from edgedeploy.importers import load_model
    from edgedeploy.importers.segments import segment_provider
    from edgedeploy.runtime.executor import random_inputs
    from edgedeploy.runtime.runner_config import (
        CONFIG_PATH,
        build_stage,
        load_config,
        resolve_stages,
    )

    path = zoo.export("mobilenet_v2", tmp_path / "m.onnx", size=64)
    graph = load_model(path)
    # two onnxruntime segments around one native layer
    choices = {layer.name: "onnxruntime" for layer in graph.layers}
    choices[graph.layers[len(graph.layers) // 2].name] = (
        "native" if graph.layers[len(graph.layers) // 2].op != "conv2d" else "im2col_gemm/nchw")
    outs = {}
    for optimize in (True, False):
        root = write_stage_bundle(graph, choices, segment_provider(graph, path),
                                  tmp_path / "releases" / f"r-{optimize}", optimize=optimize)
        cfg = load_config(root)
        plan = cfg.plan()
        stage_cfg = resolve_stages(graph, plan)[0]
        stage = build_stage(str(root), CONFIG_PATH, stage_cfg, plan.choices)
        sessions = [s.session for s in stage.executor.steps if s.session is not None]
        # a first start has a child optimise the shipped form (when usable) into the cache ...
        assert len(sessions) == 2 and all(s.child_optimized and s.cached for s in sessions)
        assert all(s.optimized_from.name.endswith(".opt.onnx") == optimize for s in sessions)
        again = build_stage(str(root), CONFIG_PATH, stage_cfg, plan.choices)
        assert all(s.session.cached for s in again.executor.steps if s.session is not None)
        feeds = [random_inputs(graph)[t] for t in stage_cfg.inputs]
        outs[optimize] = dict(zip(stage_cfg.outputs, stage(feeds), strict=True))
        outs[f"restart-{optimize}"] = dict(zip(stage_cfg.outputs, again(feeds), strict=True))
    for key in ("restart-True", False, "restart-False"):  # ... which a restart opens
        assert max_rel_error(outs[key], outs[True]) <= 1e-4


def test_a_first_start_caches_the_optimised_segment_and_a_restart_opens_it(tmp_path):
    model = block_model()
    release = tmp_path / "releases" / "r1"  # a deployed release: the runner may write here
    path = bundle_segment(release, model)
    cache = release / "engine-cache" / "stage0"
    first = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    assert first.child_optimized and first.cached and first.optimized_from.name == "0.opt.onnx"
    assert first.child_peak_rss > 0  # the child's own peak, reported back
    stored = cached_model(cache, path, ort.__version__)
    assert first.model_path == stored
    assert stored.is_file() and Path(f"{stored}.data").stat().st_size > 0
    assert sorted(p.name for p in cache.iterdir()) == [stored.name, f"{stored.name}.data"]
    again = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    assert again.cached and not again.child_optimized and again.model_path == stored
    plain = ort_default_session(model).run({"x": X})
    for seg in (first, again):
        assert max_rel_error(seg.run({"x": X}), plain) <= 1e-4
    # another onnxruntime (or CPU) has its own entry: it never opens this one
    assert cached_model(cache, path, "0.0.1") != stored


def test_a_damaged_cache_entry_is_rewritten_and_an_unwritable_cache_is_skipped(tmp_path):
    model = block_model()
    release = tmp_path / "releases" / "r1"
    path = bundle_segment(release, model)
    cache = release / "engine-cache" / "stage0"
    OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    stored = cached_model(cache, path, ort.__version__)
    stored.write_bytes(b"damaged")
    healed = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    assert healed.child_optimized and healed.cached and stored.stat().st_size > 100
    blocked = release / "a-file"
    blocked.write_text("")
    seg = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=blocked / "cache")
    assert seg.optimized and not seg.cached
    plain = ort_default_session(model).run({"x": X})
    for s in (healed, seg):
        assert max_rel_error(s.run({"x": X}), plain) <= 1e-4


def test_a_build_folder_is_never_written_to_only_a_deployed_release(tmp_path):
    path = bundle_segment(tmp_path / "build" / "net", block_model())
    files = sorted(p for p in (tmp_path / "build").rglob("*"))
    cache = tmp_path / "build" / "net" / "engine-cache" / "stage0"
    seg = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    assert seg.optimized and not seg.cached
    assert sorted(p for p in (tmp_path / "build").rglob("*")) == files  # push checks them


def test_runner_sessions_on_the_cpu_share_one_arena_and_the_baseline_keeps_its_own():
    runner = OrtSegment(block_model(), threads=1)
    assert runner.config_entry(ENV_ALLOCATORS_KEY) == "1"
    assert not runner.session.get_session_options().enable_mem_pattern
    assert ort_default_session(block_model()).config_entry(ENV_ALLOCATORS_KEY) in (None, "")
    assert release_free_heap() in (True, False)  # callable everywhere; True on glibc


SHARED_ARENA_CHILD = """
import sys
from pathlib import Path
from edgedeploy.benchmarks.memory import rss_bytes
from edgedeploy.runtime.engines.onnxruntime import OrtSegment
import numpy as np
path = Path(sys.argv[1])
x = np.ones((1, 32, 24, 24), np.float32)
sessions = [OrtSegment(path, threads=1) for _ in range(int(sys.argv[2]))]
sessions[0].run({"x": x})
one = rss_bytes()
for s in sessions[1:]:
    s.run({"x": x})
print((rss_bytes() - one) / 2**20)
"""


def test_more_runner_sessions_in_a_stage_do_not_each_keep_their_activations(tmp_path):
    path = tmp_path / "wide.onnx"
    path.write_bytes(block_model(width=2048))  # a 4.5 MB output per run
    proc = subprocess.run([sys.executable, "-c", SHARED_ARENA_CHILD, str(path), "6"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown = float(proc.stdout.strip().splitlines()[-1])
    # five more sessions, each with its own arena, would keep >= 5 x 4.5 MB more
    assert grown < 8, f"5 more sessions kept {grown:.1f} MB"


def test_winograd_packing_keeps_no_whole_layer_float64_copies():
    from types import SimpleNamespace

    from edgedeploy.runtime.primitives import _winograd, winograd_f2x3

    win = next(v for v in vars(winograd_f2x3).values() if isinstance(v, _winograd.Winograd))
    d = SimpleNamespace(c_in=256, c_out=512)
    w = np.random.default_rng(3).standard_normal((512, 256, 3, 3)).astype(np.float32)
    tracemalloc.start()
    try:
        packed = win.pack(d, {"weight": w})["weight"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    g = win.g64
    whole = (g @ w.astype(np.float64).reshape(-1, 3, 3) @ g.T).reshape(512, 256, 16)
    np.testing.assert_array_equal(packed, whole.transpose(2, 0, 1).astype(np.float32))
    assert packed.flags.c_contiguous
    # the result plus bounded blocks; the whole-layer transform held ~5x the result
    assert peak < packed.nbytes + 4 * _winograd.PACK_BLOCK_BYTES, peak / MIB


def test_when_the_child_cannot_optimise_the_stage_does_it_itself(tmp_path):
    model = block_model()
    release = tmp_path / "releases" / "r1"
    path = bundle_segment(release, model)
    (release / "app" / "segments" / "0.opt.onnx").write_bytes(b"damaged in transit")
    cache = release / "engine-cache" / "stage0"
    seg = OrtSegment(path, threads=1, prefer_optimized=True, cache_dir=cache)
    assert not seg.child_optimized and "failed" in seg.child_failure
    assert seg.model_path == path and cache_ready(cached_model(cache, path, ort.__version__))
    assert max_rel_error(seg.run({"x": X}), ort_default_session(model).run({"x": X})) <= 1e-4
