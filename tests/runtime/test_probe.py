"""The profiler's measuring side as a board runs it: ``python -m edgedeploy.runtime.probe`` from
nothing but the runtime package (as uploaded), every host-side package blocked, a JSON request
in and JSON lines out; its one-node ONNX writer, its budget and what it refuses."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy import zoo
from edgedeploy.costmodel.profiler import conv_onnx, measurable
from edgedeploy.generator.bundle import runtime_package
from edgedeploy.importers.onnx import import_onnx
from edgedeploy.runtime import ir
from edgedeploy.runtime.affinity import available_cpus
from edgedeploy.runtime.layer_timing import Measurement, spend_budget
from edgedeploy.runtime.onnx_conv import conv_model

RUNTIME = Path(__file__).resolve().parents[2] / "toolchain" / "edgedeploy" / "runtime"
PROBE_MODULES = ("probe", "layer_timing", "model_timing", "onnx_conv")
#: What the probe may import: the standard library, numpy, the runtime, the engines.
ALLOWED = {"numpy", "onnxruntime", "ai_edge_litert", "threadpoolctl"}
HOST_ONLY = ["pydantic", "typer", "jinja2", "fabric", "paramiko", "invoke", "rich", "ruamel",
             "onnx", "platformdirs", "click", "yaml"]


def _conv(**kw) -> ir.Descriptor:  # type: ignore[no-untyped-def]
    f = dict(op="conv2d", n=1, c_in=8, h=9, w=11, c_out=6, kernel_h=3, kernel_w=3, stride_h=1,
             stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1,
             dilation_w=1)
    f.update(kw)
    f["h_out"] = ir.conv_output_size(f["h"], f["kernel_h"], f["stride_h"], f["pad_top"],
                                     f["pad_bottom"], f["dilation_h"])
    f["w_out"] = ir.conv_output_size(f["w"], f["kernel_w"], f["stride_w"], f["pad_left"],
                                     f["pad_right"], f["dilation_w"])
    return ir.Descriptor(**f)


@pytest.mark.parametrize("d", [
    _conv(),
    _conv(stride_h=2, stride_w=2, pad_top=1, pad_left=0, pad_bottom=2, pad_right=1),
    _conv(c_in=8, c_out=8, groups=8, dilation_h=2, dilation_w=2, pad_top=2, pad_left=2,
          pad_bottom=2, pad_right=2),
    _conv(kernel_h=1, kernel_w=1, c_out=16, pad_top=0, pad_left=0, pad_bottom=0, pad_right=0),
], ids=["plain", "strided-asymmetric-pads", "depthwise-dilated", "pointwise"])
@pytest.mark.parametrize("bias", [True, False])
def test_the_probe_writes_the_same_one_node_conv_the_onnx_package_builds(
        d: ir.Descriptor, bias: bool) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((d.c_out, d.c_in // d.groups, d.kernel_h, d.kernel_w), np.float32)
    b = rng.standard_normal(d.c_out, np.float32) if bias else None
    x = rng.standard_normal((d.n, d.c_in, d.h, d.w), np.float32)
    ours = conv_model(d, w, b)
    onnx.checker.check_model(onnx.load_from_string(ours), full_check=True)
    got = ort.InferenceSession(ours).run(None, {"x": x})[0]
    want = ort.InferenceSession(conv_onnx(d, w, b)).run(None, {"x": x})[0]
    assert got.shape == (d.n, d.c_out, d.h_out, d.w_out)
    np.testing.assert_array_equal(got, want)


def test_the_budget_is_spent_in_order_skipping_what_would_overrun_it() -> None:
    now = [0.0]
    expect = [10.0, 1000.0, 10.0, 10.0]

    def measure(i: int) -> Measurement:
        now[0] += [0.5, 9.0, 0.5, 0.5][i]
        return Measurement(expect[i], 3, 0.0)  # as the prior said: its scale stays 1

    # a task is expected to cost RUNS_PER_TASK x its ms: 1000 ms -> 6 s, over a 2 s budget
    done = spend_budget(expect, 2.0, measure, clock=lambda: now[0])
    assert [i for i, _ in done] == [0, 2, 3]
    now[0], expect[1] = 0.0, 10.0
    done = spend_budget(expect, 2.0, measure, clock=lambda: now[0])
    assert [i for i, _ in done] == [0, 1]  # task 1 took 9 s: the budget is gone


def test_a_group_whose_set_up_is_slow_is_skipped_where_it_would_overrun_the_budget() -> None:
    """An FFT primitive spends a second packing weights for a 10 ms run: the budget counts it."""
    now = [0.0]
    groups = ["fft", "direct"] * 3
    took = {"fft": 1.0, "direct": 0.1}

    def measure(i: int) -> Measurement:
        now[0] += took[groups[i]]
        return Measurement(10.0, 3, 0.0)

    done = spend_budget([10.0] * 6, 2.5, measure, groups=groups, clock=lambda: now[0])
    assert [i for i, _ in done] == [0, 1, 2, 3, 5]  # the third fft would end at 3.2 s
    assert now[0] <= 2.5


@pytest.mark.parametrize(("fixed_s", "per_ms", "big_measured"),
                         [(0.0, 0.05, False), (0.02, 0.0, True)])
def test_a_set_up_that_grows_with_the_layer_is_priced_by_its_trend_so_a_large_one_is_skipped(
        fixed_s: float, per_ms: float, big_measured: bool) -> None:
    """Packing an FFT primitive's weights grows with the layer; a constant set-up does not."""
    expect = [0.1, 0.2, 0.4, 0.8, 100.0, 0.1]
    now = [0.0]

    def measure(i: int) -> Measurement:
        now[0] += fixed_s + per_ms * expect[i]  # a set-up that grows, or a fixed one
        return Measurement(0.0, 3, 0.0)  # runs of no time: the set-up is all

    done = [i for i, _ in spend_budget(expect, 3.0, measure, clock=lambda: now[0])]
    # grown: 5 s of set-up over the 3 s budget, skipped; fixed: 0.02 s, measured
    assert (4 in done) is big_measured and 5 in done, done
    assert now[0] <= 3.0


@pytest.mark.parametrize("told", [True, False])
def test_a_new_packing_is_priced_by_the_groups_new_ones_not_by_its_repeats(told: bool) -> None:
    """The timer keeps the last shape's packed weights: a shape's second core count costs no
    packing, and its cheap set-ups must not price the next shape's packing."""
    expect = [0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 50.0, 50.0, 0.5]
    packs = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f"]
    now = [0.0]

    def measure(i: int) -> Measurement:
        repeat = i > 0 and packs[i] == packs[i - 1]
        now[0] += 0.001 if repeat else 0.1 * expect[i]  # 5 s to pack "e"
        return Measurement(0.0, 3, 0.0)

    done = [i for i, _ in spend_budget(expect, 4.0, measure, packs=packs if told else None,
                                       clock=lambda: now[0])]
    assert (8 in done) is not told, done  # told what a task reuses, "e" is not started
    assert (now[0] <= 4.0) is told


def test_a_groups_set_up_is_its_median_until_its_tasks_span_sizes_then_its_trend() -> None:
    from edgedeploy.runtime.layer_timing import expected_setup_s

    assert expected_setup_s([], 5.0) == 0.0
    assert expected_setup_s([(1.0, 0.1), (1.0, 0.3), (1.0, 0.2)], 50.0) == pytest.approx(0.2)
    grows = [(1.0, 0.1), (2.0, 0.2), (4.0, 0.4)]
    assert expected_setup_s(grows[:2], 40.0) == pytest.approx(0.15)  # too few: the median
    assert expected_setup_s(grows, 40.0) == pytest.approx(4.0)  # proportional
    steeper = [(1.0, 0.01), (2.0, 0.1), (4.0, 1.0)]  # never more than proportional
    assert expected_setup_s(steeper, 8.0) == pytest.approx(2.0 * expected_setup_s(steeper, 4.0))
    falling = [(1.0, 0.3), (2.0, 0.2), (4.0, 0.1)]  # never less than constant
    assert expected_setup_s(falling, 40.0) == pytest.approx(expected_setup_s(falling, 1.0))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime package exactly as the deployer uploads it, and nothing else."""
    root = tmp_path_factory.mktemp("board")
    for rel, data in runtime_package().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _probe(board: Path, request: dict, tmp: Path, block: list[str] = HOST_ONLY
           ) -> tuple[int, list[dict]]:
    """Run the probe with only ``board`` on the path and ``block`` unimportable."""
    (tmp / "request.json").write_text(json.dumps(request))
    code = textwrap.dedent(f"""
        import runpy, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {block!r}:
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        sys.argv = ['probe', '--request', {str(tmp / 'request.json')!r}]
        runpy.run_module('edgedeploy.runtime.probe', run_name='__main__')
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(board), "PATH": "/usr/bin:/bin"}, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, events


def _layer_request(budget_s: float = 30.0) -> dict:
    shapes = [_conv(c_in=16, c_out=16, h=14, w=14),
              _conv(kernel_h=1, kernel_w=1, c_out=32, pad_top=0, pad_left=0, pad_bottom=0,
                    pad_right=0)]
    cpus = available_cpus()[:1]
    tasks = [{"shape": k, "primitive": p, "cpus": cpus, "expect_ms": 0.5}
             for k, d in enumerate(shapes) for p in measurable(d)]
    return {"protocol": 1, "layers": {"budget_s": budget_s, "seed": 0,
                                      "shapes": [d.to_dict() for d in shapes], "tasks": tasks}}


def test_the_probe_measures_layers_and_whole_models_from_the_runtime_package_alone(
        board: Path, tmp_path: Path) -> None:
    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    import_onnx(path).save(tmp_path / "graph")
    cpus = available_cpus()
    request = _layer_request()
    request["models"] = {
        "configs": [{"key": f"cpu:{n}", "cluster": "cpu", "cores": n, "cpus": cpus[:n]}
                    for n in (1, 2) if n <= len(cpus)],
        "models": [{"name": "squeezenet1_1", "size": 32, "onnx": "o", "graph": "g",
                    "weights": "w"}]}
    request["files"] = {"o": str(path), "g": str(tmp_path / "graph" / "graph.json"),
                        "w": str(tmp_path / "graph" / "weights.npz")}
    rc, events = _probe(board, request, tmp_path)
    assert rc == 0, events
    start, done = events[0], events[-1]
    assert start["event"] == "start" and done["event"] == "done"
    assert start["probe"] == str(board / "edgedeploy" / "runtime" / "probe.py")
    assert start["runtime"]["onnxruntime"] == ort.__version__ and start["cpus"] == cpus
    samples = [e for e in events if e["event"] == "sample"]
    tasks = request["layers"]["tasks"]
    assert [e["index"] for e in samples] == list(range(len(tasks)))  # all, in order
    assert "onnxruntime" in {t["primitive"] for t in tasks}
    assert all(e["ms"] > 0 and e["reps"] >= 2 for e in samples)
    runs = [e for e in events if e["event"] == "run"]
    assert [r["config"] for r in runs] == [c["key"] for c in request["models"]["configs"]]
    assert all(r["onnxruntime"] > 0 and r["native"] > 0 for r in runs)
    replicas = [e for e in events if e["event"] == "replicas"]
    assert [(r["cores"], r["fps"] > 0) for r in replicas] == [
        (c["cores"], True) for c in request["models"]["configs"] if c["cores"] > 1]
    assert done["measured"] == len(samples) + len(runs) + len(replicas)


def test_a_board_without_onnxruntime_or_with_other_cores_gets_an_answer_not_a_traceback(
        board: Path, tmp_path: Path) -> None:
    rc, events = _probe(board, _layer_request(), tmp_path, [*HOST_ONLY, "onnxruntime"])
    assert rc == 3 and len(events) == 1
    assert events[0]["kind"] == "missing" and events[0]["package"] == "onnxruntime"
    request = _layer_request()
    request["layers"]["tasks"][0]["cpus"] = [max(available_cpus()) + 5]
    rc, events = _probe(board, request, tmp_path)
    assert rc == 2 and events[0]["kind"] == "request" and "not available" in events[0]["message"]


def test_the_probe_times_onnx_models_alone_in_order_while_the_budget_lasts(
        board: Path, tmp_path: Path) -> None:
    from edgedeploy.importers.onnx_winograd import ConvSite
    from edgedeploy.planner.winograd import both_forms

    site = ConvSite("conv", 8, 8, 12, 12)
    for form, model in zip(("given", "rewritten"), both_forms(site), strict=True):
        (tmp_path / f"{form}.onnx").write_bytes(model.SerializeToString())
    one = available_cpus()[:1]
    sessions = [{"key": f"k{i}-{form}", "onnx": form, "cpus": one,
                 "inputs": [{"name": "x", "shape": [1, 8, 12, 12]}]}
                for i in range(2) for form in ("given", "rewritten")]
    # one timed in alternation with the other form answers both times
    sessions.append({**sessions[0], "key": "paired", "against": "rewritten"})
    files = {form: str(tmp_path / f"{form}.onnx") for form in ("given", "rewritten")}
    rc, events = _probe(board, {"protocol": 1, "files": files, "sessions": {
        "budget_s": 60, "reps": 3, "sessions": sessions}}, tmp_path)
    assert rc == 0, events
    timed = [e for e in events if e["event"] == "session"]
    assert [e["key"] for e in timed] == [s["key"] for s in sessions]  # all, in order
    assert all(e["ms"] > 0 for e in timed) and events[-1]["measured"] == len(sessions)
    assert timed[-1]["against_ms"] > 0 and all("against_ms" not in e for e in timed[:-1])
    rc, events = _probe(board, {"protocol": 1, "files": files, "sessions": {
        "budget_s": 0.0, "reps": 3, "sessions": sessions}}, tmp_path)
    assert rc == 0 and not [e for e in events if e["event"] == "session"]  # none: spent


def test_the_probe_times_a_model_batched_and_its_replicas_at_the_batches_one_core_gained_from(
        board: Path, tmp_path: Path) -> None:
    """A spec's ``batch`` file is timed at each size on every configuration; its replicas are
    timed at a size only where one core ran it ``gain_min`` faster per frame, beside the
    throughput of the same replicas at one frame a call."""
    from edgedeploy.importers.onnx_batch import batched_model

    path = zoo.export("squeezenet1_1", tmp_path / "sq.onnx", size=32)
    graph = import_onnx(path)
    graph.save(tmp_path / "graph")
    free = batched_model(graph, path)
    assert free is not None
    (tmp_path / "sq.batched.onnx").write_bytes(free)
    cpus = available_cpus()
    configs = [{"key": f"cpu:{n}", "cluster": "cpu", "cores": n, "cpus": cpus[:n]}
               for n in (1, 2) if n <= len(cpus)]
    files = {"o": str(path), "b": str(tmp_path / "sq.batched.onnx"),
             "g": str(tmp_path / "graph" / "graph.json"),
             "w": str(tmp_path / "graph" / "weights.npz")}

    def probe(gain_min: float) -> list[dict]:
        spec = {"name": "sq", "size": None, "onnx": "o", "graph": "g", "weights": "w",
                "native": False, "replica_windows": 2,
                "batch": {"onnx": "b", "sizes": [2, 4], "reps": 2, "gain_min": gain_min}}
        rc, events = _probe(board, {"protocol": 1, "files": files, "models": {
            "configs": configs, "models": [spec]}}, tmp_path)
        assert rc == 0, events
        return events

    events = probe(1e-9)  # every batch "gained"
    runs = [e for e in events if e["event"] == "run"]
    assert [r["config"] for r in runs] == [c["key"] for c in configs]
    assert all(set(r["batch"]) == {"2", "4"} and all(v > 0 for v in r["batch"].values())
               for r in runs)
    unbatched = {e["cores"]: e["fps"] for e in events if e["event"] == "replicas"}
    batched = [e for e in events if e["event"] == "replica_batch"]
    assert [(e["cores"], e["batch"]) for e in batched] == [
        (c["cores"], b) for c in configs if c["cores"] > 1 for b in (2, 4)]
    assert all(e["fps"] > 0 and e["unbatched_fps"] == unbatched[e["cores"]] for e in batched)
    assert events[-1]["measured"] == len(runs) + len(unbatched) + len(batched)
    events = probe(1e9)  # none did
    assert next(e for e in events if e["event"] == "run")["batch"]
    assert not [e for e in events if e["event"] == "replica_batch"]


def test_a_zero_budget_measures_nothing_and_says_done(board: Path, tmp_path: Path) -> None:
    rc, events = _probe(board, _layer_request(budget_s=0.0), tmp_path)
    assert rc == 0 and [e["event"] for e in events] == ["start", "done"]
    assert events[-1]["measured"] == 0


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


@pytest.mark.parametrize("module", PROBE_MODULES)
def test_the_probe_imports_only_the_runtime_numpy_the_engines_and_the_standard_library(
        module: str) -> None:
    for name in _imports(RUNTIME / f"{module}.py"):
        top = name.split(".")[0]
        if top == "edgedeploy":
            assert name.startswith("edgedeploy.runtime"), f"{module} imports {name}"
        else:
            assert top in ALLOWED or top in sys.stdlib_module_names, f"{module} imports {name}"
