"""A tiny YOLO detector: the exact layer list of Darknet's ``yolov3-tiny.cfg`` (Redmon & Farhadi,
"YOLOv3: An Incremental Improvement", 2018).

A conv/maxpool backbone with BN and LeakyReLU(0.1), a 2x2 stride-1 max pool padded on the
bottom/right (Darknet keeps the 13x13 grid), two detection heads: stride 32 and, after a 1x1
conv, a nearest 2x Resize and a Concat route with the stride-16 backbone feature, stride 16.
Each head is a biased 1x1 conv with ``3 * (5 + num_classes)`` channels (3 anchors per cell); box
decoding is left to the application, as in most exported detectors. Sizes must be multiples of 32
so the upsampled map lines up with the route.
"""

from __future__ import annotations

from edgedeploy.zoo.builder import GraphBuilder, Tensor

ANCHORS_PER_CELL = 3


def _cbl(g: GraphBuilder, x: Tensor, c_out: int, k: int, i: int) -> Tensor:
    """Darknet's conv + batch_normalize + leaky block, named after its cfg layer index."""
    return g.conv(x, c_out, k, pad=k // 2, act="leakyrelu", alpha=0.1, name=f"module_list.{i}.conv",
                  bn_name=f"module_list.{i}.bn", act_name=f"module_list.{i}.leaky")


def yolo_tiny(g: GraphBuilder, x: Tensor, num_classes: int) -> dict[str, Tensor]:
    head = ANCHORS_PER_CELL * (5 + num_classes)
    i = 0
    route16: Tensor | None = None
    for c in (16, 32, 64, 128, 256, 512):
        x = _cbl(g, x, c, 3, i)
        if c == 256:
            route16 = x  # cfg layer 8, concatenated after the upsample
        last = c == 512
        x = g.maxpool(x, 2, stride=1 if last else 2, pad=(0, 0, 1, 1) if last else 0,
                      name=f"module_list.{i + 1}.maxpool")
        i += 2
    x = _cbl(g, x, 1024, 3, 12)
    x13 = _cbl(g, x, 256, 1, 13)
    y = _cbl(g, x13, 512, 3, 14)
    out32 = g.conv(y, head, 1, pad=0, bn=False, act=None, name="module_list.15.conv")
    y = _cbl(g, x13, 128, 1, 18)
    y = g.resize(y, 2, name="module_list.19.upsample")
    assert route16 is not None
    y = g.concat([y, route16], name="module_list.20.route")
    y = _cbl(g, y, 256, 3, 21)
    out16 = g.conv(y, head, 1, pad=0, bn=False, act=None, name="module_list.22.conv")
    return {"boxes_stride32": out32, "boxes_stride16": out16}
