"""The reference model zoo: standard CNNs built as ONNX with seeded weights, no download.

Why build instead of download: tests, demos and benchmarks need real architectures on machines
without network access, and seeded weights make every file reproducible byte for byte. The
published MAC and parameter figures are kept beside each model so tests can check the build.

Conventions: input ``input`` of shape (batch, 3, size, size); classifiers output ``logits``
(batch, num_classes), the detector outputs ``boxes_stride32`` and ``boxes_stride16``. MACs count
Conv and Gemm multiply-accumulates; params count weights, biases and BN gamma/beta but not BN
running statistics (the convention of torchvision's model table and the papers).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgedeploy.errors import InputError, did_you_mean
from edgedeploy.zoo import classic, googlenet, mobilenet, resnet, squeezenet, yolo
from edgedeploy.zoo.builder import GraphBuilder, Tensor

__all__ = ["MODELS", "GraphBuilder", "ModelInfo", "build", "export", "get", "list_models",
           "model_stats", "write"]

Factory = Callable[[GraphBuilder, Tensor, int], dict[str, Tensor]]
TV = "torchvision model table (docs.pytorch.org/vision/stable/models.html), GFLOPS column = GMACs"


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about one architecture, published figures included."""

    name: str
    family: str
    description: str
    factory: Factory
    published_macs: int  # at reference_size, batch 1
    published_params: int
    source: str
    reference_size: int = 224
    num_classes: int = 1000
    min_size: int = 1  # the smallest input side that still gives non-empty feature maps
    size_multiple: int = 1
    outputs: tuple[str, ...] = ("logits",)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "family": self.family, "description": self.description,
            "input_size": self.reference_size,
            "input_shape": [1, 3, self.reference_size, self.reference_size],
            "published_macs": self.published_macs,
            "published_gmacs": round(self.published_macs / 1e9, 3),
            "published_params": self.published_params,
            "published_mparams": round(self.published_params / 1e6, 2),
            "num_classes": self.num_classes, "min_size": self.min_size,
            "size_multiple": self.size_multiple, "outputs": list(self.outputs),
            "source": self.source,
        }


MODELS: dict[str, ModelInfo] = {m.name: m for m in [
    ModelInfo("alexnet", "classic", "AlexNet, torchvision single-tower variant",
              classic.alexnet, 714_000_000, 61_100_840,
              f"Krizhevsky 2014 (arXiv:1404.5997); {TV}: 0.71 GMAC, 61.1 M", min_size=63),
    ModelInfo("vgg16", "classic", "VGG-16 (configuration D), no BN",
              classic.vgg16, 15_470_000_000, 138_357_544,
              f"Simonyan & Zisserman, ICLR 2015; {TV}: 15.47 GMAC, 138.4 M", min_size=32),
    ModelInfo("resnet18", "resnet", "ResNet-18, basic residual blocks",
              resnet.resnet18, 1_810_000_000, 11_689_512,
              f"He et al., CVPR 2016; {TV}: 1.81 GMAC, 11.7 M"),
    ModelInfo("resnet50", "resnet", "ResNet-50, bottleneck blocks (v1.5, stride on the 3x3)",
              resnet.resnet50, 4_090_000_000, 25_557_032,
              f"He et al., CVPR 2016; {TV}: 4.09 GMAC, 25.6 M"),
    ModelInfo("mobilenet_v1", "mobilenet", "MobileNet V1 1.0, depthwise-separable convolutions",
              mobilenet.mobilenet_v1, 569_000_000, 4_200_000,
              "Howard et al. 2017 (arXiv:1704.04861), Table 8: 569 M mult-adds, 4.2 M params"),
    ModelInfo("mobilenet_v2", "mobilenet", "MobileNet V2 1.0, inverted residuals, ReLU6",
              mobilenet.mobilenet_v2, 300_000_000, 3_504_872,
              f"Sandler et al., CVPR 2018; {TV}: 0.30 GMAC, 3.5 M"),
    ModelInfo("squeezenet1_1", "squeezenet", "SqueezeNet 1.1, Fire modules with Concat",
              squeezenet.squeezenet1_1, 349_000_000, 1_235_496,
              f"Iandola et al. 2016 (arXiv:1602.07360), v1.1; {TV}: 0.35 GMAC, 1.24 M",
              min_size=17),
    ModelInfo("googlenet", "inception", "GoogLeNet / Inception v1, no auxiliary heads",
              googlenet.googlenet, 1_500_000_000, 6_624_904,
              f"Szegedy et al., CVPR 2015; {TV} (aux_logits=False): 1.50 GMAC, 6.62 M",
              min_size=15),
    ModelInfo("yolo_tiny", "yolo", "Tiny YOLOv3 detector: two heads, Resize + Concat route",
              yolo.yolo_tiny, 2_786_000_000, 8_852_366,
              "Redmon & Farhadi 2018, darknet yolov3-tiny.cfg at 416, 80 classes: darknet "
              "reports 5.571 BFLOPs = 2.79 GMAC; yolov3-tiny.weights holds 8,858,734 floats, "
              "6,368 of them BN running statistics, so 8.85 M params by this zoo's convention",
              reference_size=416, num_classes=80, min_size=32, size_multiple=32,
              outputs=("boxes_stride32", "boxes_stride16")),
]}


def export_hint(path: str | Path) -> str | None:
    """The command that writes a missing ``<zoo name>.onnx`` (``resnet50.onnx``,
    ``yolo.onnx`` for ``yolo_tiny``, ``mobilenet_v2_224.onnx``), or None for other names."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        return None
    stem = path.stem.lower()
    names = [n for n in MODELS if stem == n or stem.startswith(n + "_")]
    names = names or [n for n in MODELS if n.startswith(stem + "_")]
    if not names:
        return None
    best = max(names, key=lambda n: (stem == n, len(n)))
    return f"`edgedeploy zoo export {best} -o {os.path.relpath(path)}` writes it"


def list_models() -> list[str]:
    """Names of every zoo model, in the order ``zoo list`` shows them."""
    return list(MODELS)


def get(name: str) -> ModelInfo:
    """The metadata of ``name``; an unknown name lists the available ones (did you mean ...)."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown zoo model {name!r}{did_you_mean(name, MODELS)}",
                         hint=f"available: {', '.join(MODELS)}") from None


def build(name: str, *, size: int | None = None, seed: int = 0, batch: int | str = 1,
          num_classes: int | None = None) -> onnx.ModelProto:
    """Build zoo model ``name`` as an ONNX ModelProto (opset 17).

    ``size`` defaults to the model's reference size (224, 416 for the detector); a string
    ``batch`` makes the batch dimension symbolic. Same arguments give a byte-identical model.
    """
    info = get(name)
    size = info.reference_size if size is None else int(size)
    classes = info.num_classes if num_classes is None else int(num_classes)
    _check_args(info, size, batch, classes)
    g = GraphBuilder(name, seed=seed)
    x = g.input("input", (1, 3, size, size), batch=batch)
    for out_name, tensor in info.factory(g, x, classes).items():
        g.output(tensor, out_name)
    meta = {"edgedeploy.zoo.model": name, "edgedeploy.zoo.size": size,
            "edgedeploy.zoo.seed": seed, "edgedeploy.zoo.num_classes": classes,
            "edgedeploy.zoo.macs_per_sample": g.macs // (batch if isinstance(batch, int) else 1),
            "edgedeploy.zoo.params": g.params, "edgedeploy.zoo.source": info.source}
    return g.model(doc=f"{info.description}; seeded He-normal weights (seed {seed}), not trained",
                   metadata=meta)


def _check_args(info: ModelInfo, size: int, batch: int | str, classes: int) -> None:
    if size < info.min_size:
        raise InputError(f"size {size} is too small for {info.name}",
                         hint=f"use --size {info.min_size} or more (reference: "
                              f"{info.reference_size})")
    if size % info.size_multiple:
        raise InputError(f"size {size} does not fit {info.name}: it must be a multiple of "
                         f"{info.size_multiple}", hint=f"for example --size {info.reference_size}")
    if isinstance(batch, int) and batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    if isinstance(batch, str) and not batch.isidentifier():
        raise InputError(f"a symbolic batch must be an identifier, got {batch!r}")
    if classes < 1:
        raise InputError(f"num_classes must be at least 1, got {classes}")


def export(name: str, path: str | os.PathLike[str], *, size: int | None = None, seed: int = 0,
           batch: int | str = 1, num_classes: int | None = None) -> Path:
    """Build ``name`` and write it to ``path`` (parents created, written atomically)."""
    return write(build(name, size=size, seed=seed, batch=batch, num_classes=num_classes), path)


def write(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` via a temporary file and a rename, creating parent folders,
    so an interrupted export never leaves a truncated model behind."""
    path = Path(path)
    # A unique sibling name opened with open(): unlike mkstemp it honours the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as fh:
            fh.write(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="check that the path is a writable file location") from None
    return path


def model_stats(model: onnx.ModelProto) -> dict[str, int]:
    """Size, MACs per sample and params the builder recorded in a zoo model (0 when absent)."""
    props = {p.key: p.value for p in model.metadata_props}
    return {"size": int(props.get("edgedeploy.zoo.size", 0)),
            "macs": int(props.get("edgedeploy.zoo.macs_per_sample", 0)),
            "params": int(props.get("edgedeploy.zoo.params", 0))}
