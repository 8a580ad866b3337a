"""AlexNet and VGG-16 as torchvision builds them (conv + bias, ReLU, no BN; adaptive average
pooling before a three-layer classifier).

* AlexNet: torchvision's single-tower variant from Krizhevsky, "One weird trick for
  parallelizing convolutional neural networks" (2014), 64-192-384-256-256 channels.
* VGG-16: Simonyan & Zisserman, "Very Deep Convolutional Networks" (ICLR 2015), configuration D.

Dropout is absent, as in an eval-mode export. At 224x224 the adaptive pool is the identity and is
omitted (what the exporter writes); other sizes pool when they divide evenly and otherwise flatten
the feature map they have, so the first Linear layer adapts to the size.
"""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                              512, 512, 512, "M", 512, 512, 512, "M"]


def _classifier(g: GraphBuilder, x: Tensor, num_classes: int, pool: int, hidden: int,
                linear_idx: tuple[int, int, int]) -> Tensor:
    x = g.adaptive_avgpool(x, pool, name="avgpool")
    x = g.flatten(x, name="flatten")
    a, b, c = linear_idx
    x = g.gemm(x, hidden, name=f"classifier.{a}", act="relu")
    x = g.gemm(x, hidden, name=f"classifier.{b}", act="relu")
    return g.gemm(x, num_classes, name=f"classifier.{c}")


def alexnet(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    x = g.conv(x, 64, 11, stride=4, pad=2, bn=False, name="features.0", act_name="features.1")
    x = g.maxpool(x, 3, stride=2, name="features.2")
    x = g.conv(x, 192, 5, pad=2, bn=False, name="features.3", act_name="features.4")
    x = g.maxpool(x, 3, stride=2, name="features.5")
    x = g.conv(x, 384, 3, bn=False, name="features.6", act_name="features.7")
    x = g.conv(x, 256, 3, bn=False, name="features.8", act_name="features.9")
    x = g.conv(x, 256, 3, bn=False, name="features.10", act_name="features.11")
    x = g.maxpool(x, 3, stride=2, name="features.12")
    return {"logits": _classifier(g, x, num_classes, 6, 4096, (1, 4, 6))}


def vgg16(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    idx = 0
    for item in VGG16_CFG:
        if item == "M":
            x = g.maxpool(x, 2, stride=2, name=f"features.{idx}")
            idx += 1
        else:
            assert isinstance(item, int)
            x = g.conv(x, item, 3, bn=False, name=f"features.{idx}",
                       act_name=f"features.{idx + 1}")
            idx += 2
    return {"logits": _classifier(g, x, num_classes, 7, 4096, (0, 3, 6))}
