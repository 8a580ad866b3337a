"""SqueezeNet 1.1 (Iandola et al., "SqueezeNet", 2016; v1.1 from github.com/forresti/SqueezeNet),
as torchvision.models.squeezenet1_1: Fire modules (1x1 squeeze, parallel 1x1 and 3x3 expand,
Concat), ceil-mode max pooling, a 1x1 conv classifier and global average pooling. No BN."""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

# (feature index, squeeze, expand1x1, expand3x3), "M" = MaxPool(3, 2, ceil_mode=True).
LAYOUT: list[tuple[int, int, int, int] | tuple[int, str]] = [
    (2, "M"), (3, 16, 64, 64), (4, 16, 64, 64), (5, "M"), (6, 32, 128, 128), (7, 32, 128, 128),
    (8, "M"), (9, 48, 192, 192), (10, 48, 192, 192), (11, 64, 256, 256), (12, 64, 256, 256),
]


def _fire(g: GraphBuilder, x: Tensor, squeeze: int, e1: int, e3: int, p: str) -> Tensor:
    s = g.conv(x, squeeze, 1, pad=0, bn=False, name=f"{p}.squeeze",
               act_name=f"{p}.squeeze_activation")
    a = g.conv(s, e1, 1, pad=0, bn=False, name=f"{p}.expand1x1",
               act_name=f"{p}.expand1x1_activation")
    b = g.conv(s, e3, 3, pad=1, bn=False, name=f"{p}.expand3x3",
               act_name=f"{p}.expand3x3_activation")
    return g.concat([a, b], name=f"{p}.concat")


def squeezenet1_1(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    x = g.conv(x, 64, 3, stride=2, pad=0, bn=False, name="features.0", act_name="features.1")
    for item in LAYOUT:
        if item[1] == "M":
            x = g.maxpool(x, 3, stride=2, ceil=True, name=f"features.{item[0]}")
        else:
            idx, sq, e1, e3 = item  # type: ignore[misc]
            x = _fire(g, x, sq, e1, e3, f"features.{idx}")
    x = g.conv(x, num_classes, 1, pad=0, bn=False, name="classifier.1",
               act_name="classifier.2")
    x = g.global_avgpool(x, name="classifier.3")
    return {"logits": g.flatten(x, name="flatten")}
