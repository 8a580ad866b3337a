"""The table `plan` prints of the contenders measure-to-decide timed."""

from __future__ import annotations

from typing import Any

import pytest

from edgedeploy.cli.plan_cmd import _render_decision


def _contender(name: str, rounds: list[float], again: list[float] | None = None,
               baseline: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "predicted": {"throughput_fps": 100.0},
                         "measured_fps": sum(rounds) / len(rounds), "rounds_fps": rounds,
                         "baseline": baseline}
    if again is not None:
        c["confirm_fps"] = again
    return c


def _printed(capsys: pytest.CaptureFixture[str], decision: dict[str, Any]) -> list[list[str]]:
    _render_decision(decision)
    out = capsys.readouterr().out  # not a terminal: tab-separated lines
    return [line.split("\t") for line in out.splitlines() if not line.startswith("#")]


def test_the_rounds_a_winner_was_timed_again_in_have_their_column(capsys) -> None:
    decision = {"measured": True, "target": "local", "seconds": 9.5,
                "winner": "onnxruntime_replicas", "reason": "kept",
                "contenders": [_contender("plan", [110.0, 112.0], again=[99.0, 101.0]),
                               _contender("onnxruntime_replicas", [100.0, 100.0],
                                          again=[100.0, 102.0], baseline=True),
                               _contender("pareto1", [90.0, 92.0])]}
    header, *rows = _printed(capsys, decision)
    assert header == ["contender", "predicted fps", "measured fps", "rounds fps",
                      "timed again fps"]
    again = {row[0]: row[4] for row in rows}
    assert again == {"plan": "100", "onnxruntime_replicas *": "101", "pareto1": "-"}


def test_without_a_confirmation_the_table_is_as_before(capsys) -> None:
    decision = {"measured": True, "target": "local", "seconds": 3.0, "winner": "plan",
                "contenders": [_contender("plan", [100.0, 100.0])]}
    header, *rows = _printed(capsys, decision)
    assert header == ["contender", "predicted fps", "measured fps", "rounds fps"]
    assert rows == [["plan *", "100", "100", "100..100"]]
