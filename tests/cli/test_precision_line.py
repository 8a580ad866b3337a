"""The one line `plan` and `bench` print about a lockfile's precision block."""

from __future__ import annotations

from typing import Any

import pytest

from edgedeploy.cli.output import PRECISION_NODES_SHOWN, precision_line


def _record(**fields: Any) -> dict[str, Any]:
    return {"requested": "auto", "chosen": "int8", "max_output_error": 0.05,
            "measured_error": 0.02, "top1_agreement": None, "reason": None,
            "calibration": {"source": "frames.npz", "frames": 10, "heldout_frames": 2},
            "fp32_nodes": [], **fields}


def test_int8_names_the_guard_figures() -> None:
    line = precision_line(_record(top1_agreement=1.0))
    assert line == ("precision int8 (requested auto): max relative error 0.02 <= 0.05 on 2 "
                    "held-out frame(s), top-1 agreement 100%")


@pytest.mark.parametrize("count", [1, PRECISION_NODES_SHOWN, PRECISION_NODES_SHOWN + 3])
def test_a_mixed_model_counts_and_names_its_fp32_nodes(count: int) -> None:
    nodes = [f"conv{k}" for k in range(count)]
    line = precision_line(_record(fp32_nodes=nodes))
    assert f"{count} node(s) kept fp32 (conv0" in line
    assert ("and 3 more" in line) == (count > PRECISION_NODES_SHOWN)
    assert f"conv{PRECISION_NODES_SHOWN}" not in line or count <= PRECISION_NODES_SHOWN


@pytest.mark.parametrize("error", [1.29, None])
def test_fp32_kept_gives_the_reason_and_never_claims_the_bound(error: float | None) -> None:
    """Refused by the guard (an error above the bound) or never made (no error at all)."""
    line = precision_line(_record(chosen="fp32", measured_error=error,
                                  reason="int8 refused: ...; fp32 kept"))
    assert line == "precision fp32 (requested auto): int8 refused: ...; fp32 kept"
    assert "<=" not in line


def test_bench_renders_a_plan_whose_int8_model_was_never_made(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgedeploy.cli.bench_cmd import _render

    data = {"model": "m", "target": "local", "results": [], "ratio_vs_default": 1.0,
            "ratio_vs_best_baseline": 1.0, "best_baseline": "ort_replicas",
            "predicted_throughput_fps": 10.0,
            "precision": _record(chosen="fp32", measured_error=None,
                                 reason="int8 not made: ...; fp32 kept")}
    _render(data)
    assert "precision fp32 (requested auto): int8 not made" in capsys.readouterr().out


def test_fp16_names_the_model_as_given_and_the_guard_figures() -> None:
    line = precision_line(_record(requested="fp16", chosen="fp16", measured_error=0.0072))
    assert line == ("precision fp16 (requested fp16), the model as given with its LiteRT "
                    "stages computing fp16: max relative error 0.0072 <= 0.05 on 2 held-out "
                    "frame(s)")


def test_bench_says_an_inline_plans_prediction_is_a_workers(
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgedeploy.cli.bench_cmd import _render
    from edgedeploy.cli.output import INLINE_NOTE

    data = {"model": "m", "target": "local", "results": [], "ratio_vs_default": 1.0,
            "ratio_vs_best_baseline": 1.0, "best_baseline": "litert",
            "predicted_throughput_fps": 10.0, "plan": {"stages": [{"inline": True}]}}
    _render(data)
    assert INLINE_NOTE in capsys.readouterr().out
    _render({**data, "plan": {"stages": [{"inline": False}]}})
    assert INLINE_NOTE not in capsys.readouterr().out
