"""ResNet-18 and ResNet-50 (He et al., "Deep Residual Learning", CVPR 2016, Table 1), laid out
and named like torchvision.models.resnet18 / resnet50 (stride on the 3x3 conv of a bottleneck,
the "v1.5" variant torchvision ships)."""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

#: The last BN of each residual branch gets a small gamma, as trained ResNets have (and as
#: torchvision's ``zero_init_residual`` intends); it keeps deep random networks numerically tame.
RESIDUAL_GAMMA = 0.3


def _stem(g: GraphBuilder, x: Tensor) -> Tensor:
    x = g.conv(x, 64, 7, stride=2, pad=3, name="conv1", act_name="relu")
    return g.maxpool(x, 3, stride=2, pad=1, name="maxpool")


def _head(g: GraphBuilder, x: Tensor, num_classes: int) -> Tensor:
    x = g.global_avgpool(x, name="avgpool")
    x = g.flatten(x, name="flatten")
    return g.gemm(x, num_classes, name="fc")


def _basic(g: GraphBuilder, x: Tensor, planes: int, stride: int, p: str) -> Tensor:
    y = g.conv(x, planes, 3, stride=stride, name=f"{p}.conv1", act_name=f"{p}.relu")
    y = g.conv(y, planes, 3, act=None, name=f"{p}.conv2", gamma=RESIDUAL_GAMMA)
    if stride != 1 or x.channels != planes:
        x = g.conv(x, planes, 1, stride=stride, pad=0, act=None, name=f"{p}.downsample.0",
                   bn_name=f"{p}.downsample.1")
    return g.act(g.add(y, x, name=f"{p}.add"), "relu", name=f"{p}.relu_1")


def _bottleneck(g: GraphBuilder, x: Tensor, planes: int, stride: int, p: str) -> Tensor:
    out = planes * 4
    y = g.conv(x, planes, 1, pad=0, name=f"{p}.conv1", act_name=f"{p}.relu")
    y = g.conv(y, planes, 3, stride=stride, name=f"{p}.conv2", act_name=f"{p}.relu_1")
    y = g.conv(y, out, 1, pad=0, act=None, name=f"{p}.conv3", gamma=RESIDUAL_GAMMA)
    if stride != 1 or x.channels != out:
        x = g.conv(x, out, 1, stride=stride, pad=0, act=None, name=f"{p}.downsample.0",
                   bn_name=f"{p}.downsample.1")
    return g.act(g.add(y, x, name=f"{p}.add"), "relu", name=f"{p}.relu_2")


def _resnet(g: GraphBuilder, x: Tensor, num_classes: int, blocks: list[int],
            bottleneck: bool) -> Tensor:
    block = _bottleneck if bottleneck else _basic
    x = _stem(g, x)
    for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            x = block(g, x, planes, stride, f"layer{i + 1}.{j}")
    return _head(g, x, num_classes)


def resnet18(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    return {"logits": _resnet(g, x, num_classes, [2, 2, 2, 2], bottleneck=False)}


def resnet50(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    return {"logits": _resnet(g, x, num_classes, [3, 4, 6, 3], bottleneck=True)}
