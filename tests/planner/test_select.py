"""Primitive selection equals brute-force enumeration and honours allow/deny and memory bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedeploy.errors import InfeasibleError
from edgedeploy.planner.brute import brute_select
from edgedeploy.planner.select import option_mask, select
from edgedeploy.planner.synthetic import clusters_for, random_problem


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(3, 8), dag=st.booleans(),
       n_options=st.integers(2, 4), n_clusters=st.integers(1, 2), model_edges=st.booleans())
def test_selection_equals_brute_force_on_chains_and_dags(seed, n, dag, n_options, n_clusters,
                                                         model_edges):
    rng = np.random.default_rng(seed)
    p = random_problem(rng, n, n_options=n_options, clusters=clusters_for(n_clusters), dag=dag,
                       model_edges=model_edges)
    sel = select(p)
    np.testing.assert_allclose(sel.total_ms, brute_select(p), rtol=1e-9)


def test_exhausted_branch_budget_still_gives_a_valid_assignment():
    rng = np.random.default_rng(3)
    p = random_problem(rng, 8, n_options=4, dag=True)
    sel = select(p, branch_budget=0)
    assert sel.choice.shape == (8, len(p.configs))
    assert np.all(sel.total_ms >= brute_select(p) - 1e-9)


def test_deny_list_removes_a_family_and_allow_list_restricts_conv_primitives():
    rng = np.random.default_rng(5)
    p = random_problem(rng, 6, n_options=4)
    only_winograd = [la for la in p.layers if all(o.startswith("winograd") for o in la.options)]
    if only_winograd:
        with pytest.raises(InfeasibleError, match=only_winograd[0].name):
            select(p, deny=["winograd_f4x3"])
        return
    sel = select(p, deny=["winograd_f4x3"])
    for i, layer in enumerate(p.layers):
        for c in range(len(p.configs)):
            assert not layer.options[sel.choice[i, c]].startswith("winograd_f4x3")
    allowed = ["direct", "im2col_gemm/nchw", "fft"]
    try:
        sel = select(p, allow=allowed)
    except InfeasibleError as exc:  # a layer with only other primitives: named, not silent
        assert "allow/deny" in str(exc)
        return
    for i, layer in enumerate(p.layers):
        names = {layer.options[o] for o in sel.choice[i]}
        assert names <= {"direct/nchw", "im2col_gemm/nchw", "fft/nchw", "onnxruntime"}


def test_selection_under_allow_deny_equals_brute_force_over_allowed_options():
    rng = np.random.default_rng(11)
    p = random_problem(rng, 6, n_options=4, dag=True)
    masks = option_mask(p, deny=["onnxruntime"])
    np.testing.assert_allclose(select(p, deny=["onnxruntime"]).total_ms, brute_select(p, masks))


def test_memory_bound_excludes_primitives_with_too_much_workspace():
    rng = np.random.default_rng(7)
    p = random_problem(rng, 6, n_options=4)
    bound = float(np.median([w for layer in p.layers for w in layer.workspace_bytes]))
    try:
        sel = select(p, max_workspace_bytes=bound)
    except InfeasibleError as exc:
        assert "max_memory_mb" in str(exc)
        return
    for i, layer in enumerate(p.layers):
        assert all(layer.workspace_bytes[o] <= bound for o in sel.choice[i])


def test_a_layer_left_without_options_is_infeasible_and_named():
    rng = np.random.default_rng(1)
    p = random_problem(rng, 3, n_options=1)
    with pytest.raises(InfeasibleError) as err:
        select(p, max_workspace_bytes=-1)
    assert "l0" in str(err.value) and "max_memory_mb" in str(err.value)
    assert err.value.exit_code == 3


def test_a_model_edge_in_its_own_layout_is_priced_against_the_option_that_reads_it():
    """A graph input handed over NHWC (a .tflite model's) costs an NCHW option a conversion and
    an NHWC one none; NCHW input, the other way round."""
    from dataclasses import replace

    from edgedeploy.planner.select import layer_times
    from edgedeploy.runtime.vocab import NCHW, NHWC

    p = random_problem(np.random.default_rng(2), 1, n_options=1)
    layer = replace(p.layers[0], options=("direct/nchw", "gemm_1x1/nhwc"),
                    layout_in=(NCHW, NHWC), layout_out=(NCHW, NCHW),
                    workspace_bytes=(0, 0), ms=np.ones((2, len(p.configs))))
    for edge, slower in ((NHWC, 0), (NCHW, 1)):
        q = replace(p, layers=[layer], tensors=[replace(p.tensors[0], edge_layout=edge),
                                                p.tensors[1]])
        times = [layer_times(q, np.full((1, len(q.configs)), o))[0] for o in (0, 1)]
        np.testing.assert_allclose(times[slower] - times[1 - slower], q.layout_ms[0])
        assert (select(q).choice == 1 - slower).all()
