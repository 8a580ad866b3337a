"""`edgedeploy infer` through a runner pushed to a local-directory board: frames from an .npz and
from images (preprocessed as the manifest's io says) come back as onnxruntime computes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tests.runtime.serving import Reference, assert_close, frames

from edgedeploy import api, zoo
from edgedeploy.cli.main import main
from edgedeploy.client import Client
from edgedeploy.runtime import preprocess

pytestmark = pytest.mark.timeout(240)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """squeezenet1_1 (32x32) pushed to a board folder on this host, serving clients."""
    tmp = tmp_path_factory.mktemp("infer")
    zoo.export("squeezenet1_1", tmp / "net.onnx", size=32, num_classes=10)
    manifest = tmp / "edgedeploy.yaml"
    manifest.write_text(
        "name: sq\nmodel: net.onnx\ntargets:\n  edge:\n    path: board\n"
        "output: {plans_dir: plans, build_dir: build}\nmeasure: {enabled: false}\n"
        f"io:\n  window: 4\n  preprocess: {{mean: {MEAN}, std: {STD}}}\n")
    api.push(manifest, "edge", refine=False)
    try:
        yield manifest, Reference(tmp / "net.onnx")
    finally:
        api.stop(manifest, "edge", check=False)


def test_infer_an_npz_writes_outputs_equal_to_onnxruntime(pushed, tmp_path, capsys) -> None:
    manifest, reference = pushed
    xs = np.concatenate(frames(6, seed=7))  # [6, 3, 32, 32]: a stack of single frames
    np.savez(tmp_path / "frames.npz", input=xs)
    out = tmp_path / "out.npz"
    rc = main(["infer", "-m", str(manifest), "--target", "edge", str(tmp_path / "frames.npz"),
               "-o", str(out), "--json"])
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert rc == 0, captured.err
    assert answer["frames"] == 6 and answer["output_file"] == str(out)
    with np.load(out) as npz:
        logits = npz["logits"]
    assert logits.shape == (6, 1, 10)
    for k in range(6):
        assert_close([logits[k]], reference(xs[k:k + 1]))
    top = answer["results"][2]["outputs"]["logits"]["top"][0]
    assert top[0] == int(np.argmax(reference(xs[2:3])[0]))


def test_infer_images_applies_the_manifests_preprocessing(pushed, tmp_path, capsys) -> None:
    manifest, reference = pushed
    rng = np.random.default_rng(8)
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(pixels[0]).save(folder / "a.png")
    Image.fromarray(pixels[1]).save(folder / "b.ppm")
    Image.fromarray(pixels[2]).save(folder / "c.jpg", quality=95)
    rc = main(["infer", "-m", str(manifest), "--target", "edge", str(folder), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["label"] for r in answer["results"]] == ["a.png", "b.ppm", "c.jpg"]
    decoded = [pixels[0], pixels[1], np.asarray(Image.open(folder / "c.jpg"))]
    for result, img in zip(answer["results"], decoded, strict=True):
        x = ((img / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        want = reference(x)[0].reshape(-1)
        got = np.array(result["outputs"]["logits"]["values"], dtype=np.float32)
        assert_close([got], [want])


def test_the_client_connects_by_manifest_and_target(pushed) -> None:
    manifest, reference = pushed
    x = frames(1, seed=9)[0]
    with Client.connect(manifest=manifest, target="edge") as c:
        assert_close(c.infer(x), reference(x))


def test_a_frame_the_model_cannot_take_is_exit_2(pushed, tmp_path, capsys) -> None:
    manifest, _ = pushed
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 16, 16), np.float32))
    rc = main(["infer", "-m", str(manifest), "--target", "edge", str(tmp_path / "bad.npy")])
    err = capsys.readouterr().err
    assert rc == 2 and "[2, 3, 16, 16]" in err and "takes [1, 3, 32, 32]" in err


def test_no_runner_is_exit_4_with_a_hint(tmp_path, capsys) -> None:
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=32, num_classes=10)
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text("name: sq\nmodel: net.onnx\ntargets:\n  edge:\n    path: board\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    rc = main(["infer", "-m", str(manifest), "--target", "edge", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert rc == 4 and "no runner serves" in err and "edgedeploy status" in err


def test_the_png_and_ppm_readers_match_pillow(tmp_path) -> None:
    rng = np.random.default_rng(10)
    for mode, shape in (("RGB", (9, 13, 3)), ("L", (7, 5)), ("RGBA", (6, 6, 4))):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        for name in ("x.png", "y.ppm" if mode != "L" else "y.pgm"):
            img = Image.fromarray(pixels)
            (img.convert("RGB") if name.endswith("ppm") else img).save(tmp_path / name)
            want = np.asarray(Image.open(tmp_path / name).convert("L" if mode == "L" else "RGB"))
            got = preprocess.load_image(tmp_path / name)
            assert np.array_equal(got, want.reshape(got.shape)), (mode, name)


@pytest.mark.parametrize("io, message", [
    ("{listen: 'tcp://0.0.0.0:7070'}", "needs token_file"),
    ("{listen: 'tcp://0.0.0.0:7070', token: abc}", "secrets are not accepted"),
    ("{source: {npz: /data/f.npz}, sink: client}", "sink client needs source client"),
    ("{source: {images: /data/cam}}", None),  # valid: checked against the model below
])
def test_io_mistakes_are_manifest_errors(tmp_path, capsys, io, message) -> None:
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=32, num_classes=10)
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text(f"name: sq\nmodel: net.onnx\nio: {io}\n")
    rc = main(["validate", str(manifest)])
    err = capsys.readouterr().err
    assert (rc, message is None or message in err) == (2 if message else 0, True), err


def test_io_that_cannot_feed_the_model_fails_the_build(tmp_path, capsys) -> None:
    zoo.export("squeezenet1_1", tmp_path / "net.onnx", size=32, num_classes=10)
    manifest = tmp_path / "edgedeploy.yaml"
    manifest.write_text("name: sq\nmodel: net.onnx\nio: {preprocess: {channel_order: gray}}\n")
    rc = main(["build", str(manifest), "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "gives 1 channel(s)" in err and "input [1, 3, 32, 32]" in err
    assert not (tmp_path / "b").exists()
