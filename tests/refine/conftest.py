"""Small real models for twin tests (zoo, built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_graph(tmp_path_factory):
    from edgedeploy import zoo
    from edgedeploy.importers import load_model

    path = zoo.export("squeezenet1_1", tmp_path_factory.mktemp("zoo") / "sq.onnx", size=64)
    return load_model(path)
