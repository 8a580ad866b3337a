"""Device side: runs on the board.

Imports numpy and, lazily, onnxruntime / LiteRT; nothing host-side.
"""
