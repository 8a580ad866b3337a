"""Images to model inputs: reading (PPM/PGM/PNG here, other formats through Pillow when it is
installed) and the manifest's ``io.preprocess`` (resize, scale, mean/std, channel order, layout,
dtype).

Device side and host side share it: the runner's ``images`` source uses it on the board, and
``edgedeploy infer photo.png`` on the host, so one manifest entry means one transform. The readers
are numpy + zlib because a board may lack Pillow; they take 8- and 16-bit PNGs (grey, grey+alpha,
RGB, RGBA, palette; not interlaced) and binary or ASCII PPM/PGM.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.runtime.errors import InputError

IMAGE_SUFFIXES = (".png", ".ppm", ".pgm", ".pnm", ".jpg", ".jpeg", ".bmp", ".webp", ".tif",
                  ".tiff")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class ImageError(InputError):
    """An image that cannot be read or does not fit the model's input."""


# --- reading ----------------------------------------------------------------------------------
def load_image(path: str | Path) -> np.ndarray:
    """``H x W x C`` uint8 (C = 1 grey, 3 RGB; alpha dropped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if data.startswith(_PNG_MAGIC):
            img = _png(data)
        elif data[:2] in (b"P2", b"P3", b"P5", b"P6"):
            img = _pnm(data)
        else:
            img = _pillow(path)
    except (ValueError, IndexError, struct.error, zlib.error) as exc:
        raise ImageError(f"{path}: not a readable image: {exc}") from None
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (2, 4):  # drop alpha
        img = img[:, :, :-1]
    return np.ascontiguousarray(img)


def _pillow(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ImageError(f"{path}: only PNG, PPM and PGM can be read without Pillow",
                         hint="convert the image (e.g. to PNG), or install Pillow") from None
    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            return np.asarray(im.convert(mode))
    except OSError as exc:
        raise ImageError(f"{path}: not a readable image: {exc}") from None


def _pnm(data: bytes) -> np.ndarray:
    """Netpbm P2/P3 (ASCII) and P5/P6 (binary) grey and colour images."""
    magic = data[:2]
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:  # width, height, maxval, with comments between
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and data[end:end + 1].isdigit():
            end += 1
        fields.append(int(data[pos:end]))
        pos = end
    width, height, maxval = fields
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P2", b"P3"):
        values = np.array(data[pos:].split()[:count], dtype=np.int64)
    else:
        dtype = ">u2" if maxval > 255 else "u1"
        values = np.frombuffer(data, dtype=dtype, count=count, offset=pos + 1).astype(np.int64)
    if values.size != count:
        raise ValueError(f"expected {count} samples, found {values.size}")
    img = (values * 255 // max(1, maxval)).astype(np.uint8)
    return img.reshape(height, width, channels)


def _png(data: bytes) -> np.ndarray:
    pos, idat, palette, ihdr = 8, [], None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError("no IHDR chunk")
    width, height, depth, color, _, _, interlace = ihdr
    if depth not in (8, 16) or color not in _PNG_CHANNELS or interlace:
        raise ValueError(f"bit depth {depth}, colour type {color}, interlace {interlace} is not "
                         "supported here (8/16-bit, not interlaced; or install Pillow)")
    channels = _PNG_CHANNELS[color]
    bpp = channels * depth // 8
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = _unfilter(raw.reshape(height, 1 + width * bpp), bpp)
    if depth == 16:
        img = rows.reshape(height, width, channels, 2)[..., 0]  # the high byte
    else:
        img = rows.reshape(height, width, channels)
    if color == 3:
        if palette is None:
            raise ValueError("palette image without PLTE")
        img = palette[img[:, :, 0]]
    return img


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth; PNG spec section 9)."""
    out = np.zeros((rows.shape[0], rows.shape[1] - 1), dtype=np.uint8)
    prev = np.zeros(out.shape[1], dtype=np.int32)
    for r in range(rows.shape[0]):
        kind, line = int(rows[r, 0]), rows[r, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        elif kind in (1, 3, 4):
            cur = _sequential(kind, line, prev, bpp)
        else:
            raise ValueError(f"unknown PNG filter {kind} on row {r}")
        out[r] = cur
        prev = cur.astype(np.int32)
    return out


def _sequential(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """Sub, Average and Paeth depend on the reconstructed byte to the left: pixel by pixel."""
    cur = line.copy()
    zero = np.zeros(bpp, dtype=np.int32)
    for i in range(0, cur.size, bpp):
        left = cur[i - bpp:i] if i else zero
        up = prev[i:i + bpp]
        if kind == 1:
            pred = left
        elif kind == 3:
            pred = (left + up) // 2
        else:
            upleft = prev[i - bpp:i] if i else zero
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        cur[i:i + bpp] = (cur[i:i + bpp] + pred) & 0xFF
    return cur


# --- transforming -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How an ``H x W x C`` uint8 image becomes the model's input tensor (with a batch axis)."""

    height: int
    width: int
    channels: int = 3
    layout: str = "nchw"
    channel_order: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    dtype: str = "float32"
    resize: str = "bilinear"

    @classmethod
    def for_input(cls, shape: Sequence[int], spec: Mapping[str, Any] | None) -> Preprocess:
        """The transform for a model input of ``shape`` (``[1, C, H, W]`` or ``[1, H, W, C]``)
        and the manifest's ``io.preprocess`` entries; images are resized to the input's own
        height and width (``resize`` names the method: bilinear or nearest)."""
        spec = dict(spec or {})
        layout = str(spec.get("layout") or "nchw")  # a bundle's config always says it
        if len(shape) != 4 or layout not in ("nchw", "nhwc"):
            raise ImageError(f"image preprocessing needs a 4-D NCHW or NHWC input, got shape "
                             f"{list(shape)} with layout {layout!r}")
        c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1],
                                                                         shape[2])
        return cls(height=int(h), width=int(w), channels=int(c), layout=layout,
                   channel_order=str(spec.get("channel_order", "rgb" if c == 3 else "gray")),
                   scale=float(spec.get("scale", 1.0 / 255.0)),
                   mean=tuple(float(x) for x in spec.get("mean", (0.0,))),
                   std=tuple(float(x) for x in spec.get("std", (1.0,))),
                   dtype=str(spec.get("dtype", "float32")),
                   resize=str(spec.get("resize", "bilinear")))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if self.channel_order == "gray":
            if img.shape[2] == 3:
                img = (img.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))[:, :, None]
        elif img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if self.channel_order == "bgr":
            img = img[:, :, ::-1]
        if img.shape[2] != self.channels:
            raise ImageError(f"the image has {img.shape[2]} channels after {self.channel_order!r}"
                             f" conversion; the model takes {self.channels}")
        x = resize(img.astype(np.float32), self.height, self.width, self.resize)
        x = x * np.float32(self.scale)
        x = (x - np.float32(self.mean)) / np.float32(self.std)
        if self.layout == "nchw":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None]).astype(self.dtype)


def resize(img: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """``H x W x C`` to ``height x width x C`` (half-pixel centres as OpenCV's INTER_LINEAR;
    no antialiasing when shrinking)."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    ys = (np.arange(height) + 0.5) * h / height - 0.5
    xs = (np.arange(width) + 0.5) * w / width - 0.5
    if mode == "nearest":
        yi = np.clip(np.floor(ys + 0.5).astype(int), 0, h - 1)
        xi = np.clip(np.floor(xs + 0.5).astype(int), 0, w - 1)
        return img[yi][:, xi]
    ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def image_files(folder: str | Path) -> list[Path]:
    """The images in ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
