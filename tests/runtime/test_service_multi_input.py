"""A model with two inputs, deployed to this host and used through the client: frames given by
input name or in input order come back equal to onnxruntime's answer, in order."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from tests.importers.test_input_shapes import two_input_model

from edgedeploy.cli.main import main
from edgedeploy.client import Client

pytestmark = pytest.mark.timeout(240)


def test_a_two_input_model_is_served_by_name_and_by_order(tmp_path, capsys) -> None:
    model = two_input_model(tmp_path / "two.onnx")
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text(
        f"name: two\nmodel:\n  path: {model}\n  input_shapes:\n    image: [1, 3, 8, 8]\n"
        f"targets:\n  local:\n    path: {tmp_path / 'board'}\n"
        "measure: {enabled: false}\noutput:\n  plans_dir: .\n")
    m = ["-m", str(manifest), "--target", "local"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    frames = [{"image": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
               "mask": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(6)]
    try:
        assert main(["push", *m, "--no-refine"]) == 0, capsys.readouterr().err
        with Client.connect(manifest=manifest, target="local") as c:
            assert [t.name for t in c.inputs] == ["image", "mask"]
            (got,) = c.infer(frames[0])  # by name
            np.testing.assert_allclose(got, session.run(None, frames[0])[0], rtol=1e-5,
                                       atol=1e-5)
            ordered = [[f["image"], f["mask"]] for f in frames]  # in input order
            for index, (outs,) in zip(range(6), (o for _, o in c.stream(ordered)),
                                      strict=True):
                np.testing.assert_allclose(outs, session.run(None, frames[index])[0],
                                           rtol=1e-5, atol=1e-5)
    finally:
        main(["stop", *m])
