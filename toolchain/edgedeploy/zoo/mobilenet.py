"""MobileNet V1 and V2.

* V1: Howard et al., "MobileNets" (2017), Table 1 at width 1.0: a 3x3 stem then 13 depthwise-
  separable blocks (3x3 depthwise + 1x1 pointwise, each with BN and ReLU), global average pool
  and a fully connected classifier. Names follow the common PyTorch port (``model.<i>.<j>``).
* V2: Sandler et al., "MobileNetV2" (CVPR 2018), Table 2, as torchvision.models.mobilenet_v2:
  inverted residuals with linear bottlenecks, ReLU6 exported as Clip.
"""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

# (output channels, stride) of the 13 depthwise-separable blocks of MobileNet V1.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

# (expansion t, channels c, repeats n, first stride s), Table 2 of the V2 paper.
V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v1(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    x = g.conv(x, 32, 3, stride=2, name="model.0.0", bn_name="model.0.1", act_name="model.0.2")
    for i, (c_out, stride) in enumerate(V1_BLOCKS, start=1):
        p = f"model.{i}"
        x = g.conv(x, x.channels, 3, stride=stride, groups=x.channels, name=f"{p}.0",
                   bn_name=f"{p}.1", act_name=f"{p}.2")
        x = g.conv(x, c_out, 1, pad=0, name=f"{p}.3", bn_name=f"{p}.4", act_name=f"{p}.5")
    x = g.global_avgpool(x, name="avgpool")
    x = g.flatten(x, name="flatten")
    return {"logits": g.gemm(x, num_classes, name="fc")}


def _inverted_residual(g: GraphBuilder, x: Tensor, c_out: int, stride: int, t: int,
                       p: str) -> Tensor:
    hidden = x.channels * t
    y, k = x, 0
    if t != 1:
        y = g.conv(y, hidden, 1, pad=0, act="relu6", name=f"{p}.conv.0.0",
                   bn_name=f"{p}.conv.0.1", act_name=f"{p}.conv.0.2")
        k = 1
    y = g.conv(y, hidden, 3, stride=stride, groups=hidden, act="relu6", name=f"{p}.conv.{k}.0",
               bn_name=f"{p}.conv.{k}.1", act_name=f"{p}.conv.{k}.2")
    y = g.conv(y, c_out, 1, pad=0, act=None, name=f"{p}.conv.{k + 1}",
               bn_name=f"{p}.conv.{k + 2}", gamma=0.5)
    if stride == 1 and x.channels == c_out:
        y = g.add(x, y, name=f"{p}.add")
    return y


def mobilenet_v2(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    x = g.conv(x, 32, 3, stride=2, act="relu6", name="features.0.0", bn_name="features.0.1",
               act_name="features.0.2")
    idx = 1
    for t, c, n, s in V2_SETTINGS:
        for j in range(n):
            x = _inverted_residual(g, x, c, s if j == 0 else 1, t, f"features.{idx}")
            idx += 1
    x = g.conv(x, 1280, 1, pad=0, act="relu6", name=f"features.{idx}.0",
               bn_name=f"features.{idx}.1", act_name=f"features.{idx}.2")
    x = g.global_avgpool(x, name="avgpool")
    x = g.flatten(x, name="flatten")
    return {"logits": g.gemm(x, num_classes, name="classifier.1")}
