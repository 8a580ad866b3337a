"""Is Winograd F(4,3) inside onnxruntime a lever on this host? Each 3x3 layer shape of VGG-16 and
ResNet-50 at 224 is run by onnxruntime as its own Conv and as the Winograd rewrite in standard
ONNX ops (``importers.onnx_winograd`` says which), on one thread
and on every core, in alternated rounds. DESIGN.md measured 1.23-1.79x on 3x3 layers of >= 128
channels on a 2-core AVX2 EPYC; this records what the rewrite does where the planner runs now.
Writes results/winograd_in_onnxruntime.json (reported, not asserted: timings are not tests)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgedeploy.importers.onnx_winograd import winograd_rewrite

OUT = Path(__file__).resolve().parents[2] / "results" / "winograd_in_onnxruntime.json"
#: (model, channels in = out, spatial size) of the 3x3 stride-1 convs at 224
SHAPES = (("vgg16", 64, 224), ("vgg16", 128, 112), ("vgg16", 256, 56), ("vgg16", 512, 28),
          ("vgg16", 512, 14), ("resnet50", 64, 56), ("resnet50", 128, 28),
          ("resnet50", 256, 14), ("resnet50", 512, 7))
ROUNDS = 4
WINDOW_S = 0.3


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(value, name)


def _conv(c_in: int, c_out: int, h: int, w: int) -> onnx.ModelProto:
    """One 3x3 stride-1 conv with a bias (seeded weights), as onnxruntime's Conv (node
    ``conv``): a layer alone."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, h, w])],
        [_const("w", weight), _const("b", bias)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _model(c: int, h: int, winograd: bool) -> bytes:
    """The conv of ``c`` channels on ``h`` x ``h``, as given or rewritten as F(4,3)."""
    model = _conv(c, c, h, h)
    return (winograd_rewrite(model, ["conv"])[0] if winograd else model).SerializeToString()


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _ms(session: ort.InferenceSession, x: np.ndarray) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < WINDOW_S:
        session.run(None, {"x": x})
        n += 1
    return (time.perf_counter() - t0) / n * 1e3


def test_winograd_written_in_onnx_ops_against_onnxruntimes_conv() -> None:
    cores = len(os.sched_getaffinity(0))
    rows = []
    for model, c, h in SHAPES:
        x = np.random.default_rng(1).standard_normal((1, c, h, h)).astype(np.float32)
        for threads in sorted({1, cores}):
            conv, wino = _session(_model(c, h, False), threads), _session(_model(c, h, True),
                                                                          threads)
            ref, got = conv.run(None, {"x": x})[0], wino.run(None, {"x": x})[0]
            times: dict[str, list[float]] = {"conv": [], "winograd": []}
            for r in range(ROUNDS):
                pair = [("conv", conv), ("winograd", wino)]
                for name, s in pair if r % 2 == 0 else pair[::-1]:
                    times[name].append(_ms(s, x))
            conv_ms, wino_ms = (float(np.median(times[k])) for k in ("conv", "winograd"))
            rows.append({"model": model, "channels": c, "size": h, "threads": threads,
                         "conv_ms": round(conv_ms, 3), "winograd_ms": round(wino_ms, 3),
                         "speedup": round(conv_ms / wino_ms, 3),
                         "max_rel_error": float(np.abs(ref - got).max() / np.abs(ref).max())})
            print(rows[-1], flush=True)
    OUT.write_text(json.dumps({
        "what": "one 3x3 stride-1 conv (C in = C out, batch 1) run by onnxruntime as its Conv "
                "and as Winograd F(4,3) written in ONNX ops; median of alternated rounds",
        "command": "python -m pytest -q tests/bench/test_winograd_in_engine.py "
                   "-p no:cacheprovider -s",
        "onnxruntime": ort.__version__, "cores": cores, "rows": rows}, indent=1) + "\n")
    assert all(r["max_rel_error"] < 1e-3 for r in rows)


WHOLE_MODELS = (("vgg16", 224), ("resnet50", 224))
#: A layer is rewritten where, timed alone on one thread, Winograd beat the Conv by this much.
LAYER_GAIN = 1.05
WHOLE_ROUNDS = 6


def test_whole_models_with_the_layers_winograd_wins_rewritten(tmp_path: Path) -> None:
    """Whole models with the 3x3 layers where Winograd won alone (one thread) rewritten, beside
    the model as given: two one-thread replicas and the default session, every system
    measured by the product's estimator in alternated rounds. Writes
    results/winograd_whole_model.json (reported, not asserted)."""
    from edgedeploy import zoo
    from edgedeploy.benchmarks import systems
    from edgedeploy.importers.onnx import import_onnx
    from edgedeploy.importers.onnx_winograd import conv_sites

    out = []
    for name, size in WHOLE_MODELS:
        model = zoo.build(name, size=size)
        gains = {}
        for site in conv_sites(model):
            shape = (site.c_in, site.c_out, site.h, site.w)
            if shape not in gains:
                one = _conv(site.c_in, site.c_out, site.h, site.w)
                conv, wino = (_session(m.SerializeToString(), 1)
                              for m in (one, winograd_rewrite(one, ["conv"])[0]))
                x = np.random.default_rng(1).standard_normal((1, site.c_in, site.h, site.w)
                                                             ).astype(np.float32)
                times: dict[str, list[float]] = {"conv": [], "winograd": []}
                for r in range(ROUNDS):
                    pair = [("conv", conv), ("winograd", wino)]
                    for k, s in pair if r % 2 == 0 else pair[::-1]:
                        times[k].append(_ms(s, x))
                gains[shape] = float(np.median(times["conv"]) / np.median(times["winograd"]))
        chosen = {s.node for s in conv_sites(model)
                  if gains[(s.c_in, s.c_out, s.h, s.w)] >= LAYER_GAIN}
        rewritten, done = winograd_rewrite(model, chosen)
        paths = {"as given": tmp_path / f"{name}.onnx",
                 "rewritten": tmp_path / f"{name}_winograd.onnx"}
        onnx.save(model, paths["as given"])
        onnx.save(rewritten, paths["rewritten"])
        graph = import_onnx(paths["as given"])
        x = np.random.default_rng(2).standard_normal(graph.inputs[0].shape).astype(np.float32)
        ref = _session(paths["as given"].read_bytes(), 1).run(None, {graph.inputs[0].name: x})
        got = _session(paths["rewritten"].read_bytes(), 1).run(None, {graph.inputs[0].name: x})
        error = float(np.abs(ref[0] - got[0]).max() / np.abs(ref[0]).max())
        row = {"model": name, "size": size, "rewritten": done,
               "layer_gains_one_thread": {"x".join(map(str, k)): round(v, 3)
                                          for k, v in gains.items()},
               "max_rel_error": error, "systems": {}}
        if done:
            makers = {"two one-thread replicas": systems.ort_replicas,
                      "default session": lambda _g, p: systems.ort_default(p)}
            systems_ = {f"{kind}, {variant}": make(import_onnx(paths[variant]), paths[variant])
                        for variant in paths for kind, make in makers.items()}
            frame = lambda _k, x=x: [x]  # noqa: E731
            try:
                per_round = {k: max(4, int(2.0 * s.probe(4, frame))) for k, s in systems_.items()}
                for r in range(WHOLE_ROUNDS):
                    order = list(systems_.items())
                    for k, s in order if r % 2 == 0 else order[::-1]:
                        s.measure_round(per_round[k], 2, frame, latency_samples=1)
            finally:
                for s in systems_.values():
                    s.close()
            for k, s in systems_.items():
                row["systems"][k] = s.summary()["rounds_fps"]
            for kind in makers:
                a = row["systems"][f"{kind}, rewritten"]
                b = row["systems"][f"{kind}, as given"]
                row[f"gain, {kind}"] = round(float(np.median(a) / np.median(b)), 3)
        out.append(row)
        print({k: v for k, v in row.items() if k not in ("systems", "layer_gains_one_thread")},
              flush=True)
    (OUT.parent / "winograd_whole_model.json").write_text(json.dumps({
        "what": "whole zoo models with the 3x3 layers where Winograd F(4,3) in ONNX ops beat "
                f"onnxruntime's Conv alone on one thread by >= {LAYER_GAIN}x rewritten "
                "(importers.onnx_winograd), beside the model as given; frames a second, "
                "each round a window of about 2 s, rounds alternated",
        "command": "python -m pytest -q tests/bench/test_winograd_in_engine.py -k whole_models "
                   "-p no:cacheprovider -s",
        "onnxruntime": ort.__version__, "cores": len(os.sched_getaffinity(0)),
        "rows": out}, indent=1) + "\n")
    assert all(r["max_rel_error"] < 1e-3 for r in out)


def _wide_tail(seed: int = 0) -> onnx.ModelProto:
    """VGG-16's conv4 block and a classifier, at 28 px: the 3x3 layers (256-512 channels) where
    Winograd ran 1.1-1.5x onnxruntime's Conv alone on one thread here."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "x"
    for k, (c_in, c_out) in enumerate([(256, 512), (512, 512), (512, 512)]):
        inits += [_const(f"w{k}", (rng.standard_normal((c_out, c_in, 3, 3)) * 0.02
                                   ).astype(np.float32)),
                  _const(f"b{k}", (rng.standard_normal(c_out) * 0.1).astype(np.float32))]
        nodes += [helper.make_node("Conv", [x, f"w{k}", f"b{k}"], [f"c{k}"], name=f"conv{k}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x = f"r{k}"
    inits += [_const("fc", (rng.standard_normal((10, 512)) * 0.05).astype(np.float32)),
              _const("fc_b", np.zeros(10, np.float32))]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["y"], name="classifier",
                               transB=1)]
    graph = helper.make_graph(
        nodes, "wide_tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 256, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_planner_keeps_the_rewrite_where_it_wins(tmp_path: Path) -> None:
    """`edgedeploy bench` (plan with measure-to-decide and its Winograd trial, from a fresh
    cache, then the plan beside the baselines on the model as given) on a model made of the
    layers where Winograd wins alone here. Writes results/winograd_planned.json (reported, not
    asserted: whether the rewrite is kept is this host's to say)."""
    from edgedeploy.benchmarks.compare import BenchRequest, bench

    path = tmp_path / "wide_tail.onnx"
    onnx.save(_wide_tail(), path)
    data = bench(path, BenchRequest(frames=60, rounds=6), progress=print)
    keep = ("ratio_vs_default", "ratio_vs_best_baseline", "ratio_vs_best_baseline_worst_round",
            "ratio_vs_best_baseline_worst_pair", "best_baseline", "winograd", "plan",
            "best_winograd_baseline", "ratio_vs_best_winograd_baseline")
    (OUT.parent / "winograd_planned.json").write_text(json.dumps({
        "what": "edgedeploy bench of VGG-16's conv4 block and a classifier at 28 px "
                "(_wide_tail): planned from a fresh cache with measure-to-decide's Winograd "
                "trial, then measured beside onnxruntime's default session and one-thread "
                "replicas on the model as given (and on the rewritten model, where chosen)",
        "command": "python -m pytest -q tests/bench/test_winograd_in_engine.py -k keeps "
                   "-p no:cacheprovider -s",
        "onnxruntime": ort.__version__, "cores": len(os.sched_getaffinity(0)),
        "results": {r["system"]: {"fps": r["throughput_fps"], "rounds": r["rounds_fps"]}
                    for r in data["results"]},
        **{k: data[k] for k in keep if k in data}}, indent=1) + "\n")
    print({k: data.get(k) for k in keep[:4]}, (data.get("winograd") or {}).get("reason"))
    assert data["results"][0]["throughput_fps"] > 0
