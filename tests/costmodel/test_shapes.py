"""The designed sample's zoo shapes ship with the package and match what the zoo builds."""

from __future__ import annotations

from edgedeploy.costmodel import shapes


def test_packaged_zoo_shapes_are_what_the_zoo_builds(zero_weights: None) -> None:
    built = shapes._build_zoo_shapes(shapes.ZOO_SIZE)
    packaged = shapes.zoo_conv_shapes(shapes.ZOO_SIZE)
    assert [shapes.shape_key(d) for d in packaged] == [shapes.shape_key(d) for d in built], (
        "a zoo model changed: rewrite the packaged shapes with "
        "python -c 'from edgedeploy.costmodel import shapes; shapes.write_packaged_shapes()'")


def test_the_designed_sample_holds_zoo_fit_shapes_and_no_heldout_shape() -> None:
    sample = {shapes.shape_key(d) for d in shapes.designed_sample()}
    zoo = shapes.zoo_conv_shapes()
    fit = [d for d in zoo if not shapes.is_heldout(d)]
    assert fit and all(shapes.shape_key(d) in sample for d in fit)
    assert not any(shapes.shape_key(d) in sample for d in shapes.heldout_shapes())
