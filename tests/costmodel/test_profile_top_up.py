"""A profile that must reach a number of layer samples (the quick profile before a first
measured plan) takes more budgets of layers on a host that measured too few in one, says so,
and stops after MAX_TOP_UPS of them."""

from __future__ import annotations

from edgedeploy.boards.catalog import load_target
from edgedeploy.costmodel import profile as prof_mod
from edgedeploy.costmodel.profiling import MAX_TOP_UPS, profile_local


def test_too_few_layer_samples_get_more_budgets_up_to_the_limit() -> None:
    target = load_target("local")  # the session's throw-away cache (tests/conftest.py)
    said: list[str] = []
    out = profile_local(target, 0.3, info=said.append, calibration=[],
                        min_fit_samples=10**6)
    tops = [m for m in said if "fewer than 1000000 layer samples" in m]
    assert len(tops) == MAX_TOP_UPS
    # every budget's samples are in the profile and in the answer
    assert out["new_samples"] > 0
    assert out["samples"] == len(prof_mod.open_profile(target).samples)
    said.clear()
    profile_local(target, 0.3, info=said.append, calibration=[], min_fit_samples=1)
    assert not any("fewer than" in m for m in said)  # enough already: no top-up


def test_a_top_up_measures_the_lightest_shapes_first(monkeypatch) -> None:
    """The profile's own order puts a model's heavy shapes first; a top-up exists to reach a
    number of samples, so it takes the shapes in order of their multiply-adds."""
    from edgedeploy.costmodel import evaluate

    target = load_target("local")
    orders: list[list[int]] = []
    real = evaluate.ensure_fit_sample

    def recorded(target, prof, budget_s, measure, progress=None, shapes=None):  # type: ignore[no-untyped-def]
        orders.append([d.macs for d in shapes])
        return real(target, prof, budget_s, measure, progress, shapes)

    monkeypatch.setattr(evaluate, "ensure_fit_sample", recorded)
    profile_local(target, 0.2, info=lambda _m: None, calibration=[], min_fit_samples=10**6)
    first, *tops = orders
    assert len(tops) == MAX_TOP_UPS and first != sorted(first)  # the designed order: mixed
    assert all(top == sorted(first) for top in tops)
