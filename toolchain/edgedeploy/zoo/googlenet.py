"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
Table 1) as torchvision.models.googlenet builds it without the auxiliary heads: every conv is
BasicConv2d (conv without bias, BN with eps 1e-3, ReLU), ceil-mode max pooling, and — like
torchvision, for compatibility with its weights — a 3x3 conv in the "5x5" branch."""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

# name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj); "pool" entries are max pools.
INCEPTIONS: list[tuple[str, tuple[int, ...]]] = [
    ("inception3a", (64, 96, 128, 16, 32, 32)), ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", (3,)),
    ("inception4a", (192, 96, 208, 16, 48, 64)), ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)), ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", (2,)),
    ("inception5a", (256, 160, 320, 32, 128, 128)), ("inception5b", (384, 192, 384, 48, 128, 128)),
]


def _basic(g: GraphBuilder, x: Tensor, c_out: int, k: int, p: str, stride: int = 1) -> Tensor:
    return g.conv(x, c_out, k, stride=stride, name=f"{p}.conv", bn_eps=1e-3,
                  act_name=f"{p}.relu")


def _inception(g: GraphBuilder, x: Tensor, ch: tuple[int, ...], p: str) -> Tensor:
    c1, c3r, c3, c5r, c5, pp = ch
    b1 = _basic(g, x, c1, 1, f"{p}.branch1")
    b2 = _basic(g, _basic(g, x, c3r, 1, f"{p}.branch2.0"), c3, 3, f"{p}.branch2.1")
    b3 = _basic(g, _basic(g, x, c5r, 1, f"{p}.branch3.0"), c5, 3, f"{p}.branch3.1")
    b4 = g.maxpool(x, 3, stride=1, pad=1, ceil=True, name=f"{p}.branch4.0")
    b4 = _basic(g, b4, pp, 1, f"{p}.branch4.1")
    return g.concat([b1, b2, b3, b4], name=f"{p}.concat")


def googlenet(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    x = _basic(g, x, 64, 7, "conv1", stride=2)
    x = g.maxpool(x, 3, stride=2, ceil=True, name="maxpool1")
    x = _basic(g, x, 64, 1, "conv2")
    x = _basic(g, x, 192, 3, "conv3")
    x = g.maxpool(x, 3, stride=2, ceil=True, name="maxpool2")
    for name, ch in INCEPTIONS:
        if name.startswith("maxpool"):
            x = g.maxpool(x, ch[0], stride=2, ceil=True, name=name)
        else:
            x = _inception(g, x, ch, name)
    x = g.global_avgpool(x, name="avgpool")
    x = g.flatten(x, name="flatten")
    return {"logits": g.gemm(x, num_classes, name="fc")}
