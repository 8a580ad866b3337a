"""Helpers for manifest tests: write a manifest next to a (fake) model file."""

from __future__ import annotations

from pathlib import Path

GOOD = """\
name: demo
model:
  path: model.onnx
  input_shape: [1, 3, 224, 224]
objective: latency
constraints:
  max_latency_ms: 50
pipeline:
  max_stages: 3
targets:
  local: {}
  jetson:
    board: jetson-tx2
    host: jetson.local
    user: nvidia
"""


def write_manifest(folder: Path, text: str, name: str = "manifest.yaml") -> Path:
    """Write ``text`` as a manifest in ``folder`` beside a fake model.onnx."""
    (folder / "model.onnx").write_bytes(b"not really onnx")
    path = folder / name
    path.write_text(text)
    return path
