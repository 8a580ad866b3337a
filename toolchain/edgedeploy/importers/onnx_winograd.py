"""3x3 convolutions rewritten as Winograd F(4,3) in standard ONNX operators, for onnxruntime.

A primitive can live inside an engine's segment with no Python hop: the input transform is one
6x6 stride-4 Conv with fixed kernels over every channel as a frame of its own, the
Winograd-domain product one batched MatMul per tile position, the output transform a MatMul and
a DepthToSpace (DESIGN.md, "Levers"). onnxruntime runs the rewritten nodes with its own kernels,
so the rewrite is worth it only where its MatMul beats onnxruntime's Conv on that shape and core
count: which layers to rewrite is measured, not assumed (a 256-channel 56 px layer ran 1.8x
faster on one thread here, a 64-channel 56 px one 0.9x). The batch axis stays free (Reshapes
infer or copy it): a micro-batched segment may take the rewrite too.

Why these operators: each transform's form decides whether the rewrite wins at all. On this
host's one thread, a 256-channel 56 px layer ran 1.41x onnxruntime's Conv with the input
transform as a grouped Conv (one group per channel) and the output's blocks moved by
Transpose, and 1.83x as written here: onnxruntime runs a grouped Conv group by group, but one
single-channel Conv over many frames through its blocked (NCHWc) kernel; DepthToSpace is the
Transpose's very permutation with its own kernel; and the Conv pads the tiles itself, so no Pad
copies the input first (seen while developing; on nine 3x3 shapes of VGG-16 and ResNet-50,
0.47-1.59x before, 0.56-1.83x after).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgedeploy.importers.onnx_prep import default_opset, name_nodes, outer_scope_inputs
from edgedeploy.runtime.primitives._winograd import toom_cook

M, R = 4, 3  # F(4,3): 4x4 outputs from 6x6 input tiles
A = M + R - 1
#: The interpolation points of the native ``winograd_f4x3`` primitive: the same transforms.
POINTS = tuple(Fraction(p) for p in (0, 1, -1, 2, -2))
#: The opset the rewritten nodes need (Slice's bounds as inputs, DepthToSpace's mode): an older
#: model is converted to it by onnx's version converter first.
MIN_OPSET = 11


@dataclass(frozen=True)
class ConvSite:
    """An ONNX Conv the rewrite applies to: 3x3, stride 1, padding 1, no groups or dilation,
    its weight an initializer; its channels and the input's spatial size."""

    node: str
    c_in: int
    c_out: int
    h: int
    w: int


def conv_sites(proto: onnx.ModelProto) -> list[ConvSite]:
    """Every Conv of ``proto``'s main graph the rewrite applies to (shapes from inference)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in (*inferred.graph.value_info, *inferred.graph.input)}
    weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        wshape = weights[node.input[1]]
        x = shapes.get(node.input[0]) or []
        if (len(wshape) != 4 or tuple(wshape[2:]) != (3, 3) or a.get("group", 1) != 1
                or list(a.get("strides", [1, 1])) != [1, 1]
                or list(a.get("dilations", [1, 1])) != [1, 1]
                or list(a.get("pads", [0, 0, 0, 0])) != [1, 1, 1, 1]
                or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or len(x) != 4 or min(x[2:]) <= 0):
            continue
        out.append(ConvSite(node.name, int(wshape[1]), int(wshape[0]), int(x[2]), int(x[3])))
    return out


def winograd_rewrite(proto: onnx.ModelProto, sites: Iterable[str] | Callable[[ConvSite], bool]
                     ) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``proto`` with the Conv nodes ``sites`` names (or accepts) rewritten as
    Winograd F(4,3); the names rewritten. Unnamed nodes are named as the importer names them
    (``onnx_prep.name_nodes``); outputs keep their names, so nothing downstream changes. A
    model older than :data:`MIN_OPSET` is converted to it (after its nodes are named, so the
    names are the model's own); the converter's error, where it cannot, is raised as it is."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)  # the one copy: rewritten in place below
    name_nodes(out)
    if default_opset(out) < MIN_OPSET:
        from onnx import version_converter

        out = version_converter.convert_version(out, MIN_OPSET)
    found = {s.node: s for s in conv_sites(out)}
    if callable(sites):
        chosen = {n for n, s in found.items() if sites(s)}
    else:
        chosen = set(sites) & set(found)
    inits = {t.name: t for t in out.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    done = []
    for node in list(out.graph.node):
        if node.name not in chosen:
            nodes.append(node)
            continue
        site = found[node.name]
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[node.input[2]])
             if len(node.input) > 2 and node.input[2] in inits else None)
        new_nodes, new_inits = _rewritten(node, site, w, b)
        nodes += new_nodes
        added += new_inits
        done.append(node.name)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added)
    used = {i for n in out.graph.node for i in (*n.input, *outer_scope_inputs(n))}
    used |= {i.name for i in out.graph.input}
    for k in reversed(range(len(out.graph.initializer))):  # in place: extend() copies tensors
        if out.graph.initializer[k].name not in used:
            del out.graph.initializer[k]  # the rewritten layers' 3x3 weights are gone
    return out, done


def _rewritten(node: onnx.NodeProto, site: ConvSite, w: np.ndarray, b: np.ndarray | None
               ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    at, g, bt = toom_cook(M, R, POINTS)
    th, tw = -(-site.h // M), -(-site.w // M)  # tiles down and across
    ci, co = site.c_in, site.c_out
    p = f"{node.name}/winograd/"
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, p + name))
        return p + name

    def i64(*v: int) -> np.ndarray:
        return np.array(v, np.int64)

    k_in = np.einsum("ip,jq->ijpq", bt, bt).reshape(A * A, 1, A, A)
    # G w G^T for every (o, c), as matmuls: a three-operand einsum took 0.2 s a 512-channel layer
    u = (g @ w @ g.T).transpose(2, 3, 0, 1).reshape(A * A, co, ci)
    k_out = np.einsum("ip,jq->ijpq", at, at).reshape(M * M, A * A)
    steps = [  # (operator, extra inputs, attributes)
        ("Reshape", [const("planes", i64(-1, 1, site.h, site.w))], {}),  # [N * ci, 1, h, w]
        # every 6x6 tile, 4 apart, transformed: the layer's padding and the last tiles' own
        ("Conv", [const("k_in", k_in.astype(np.float32))],
         {"strides": [M, M], "pads": [1, 1, th * M + 1 - site.h, tw * M + 1 - site.w]}),
        ("Reshape", [const("tiles", i64(-1, ci, A * A, th * tw))], {}),
        ("Transpose", [], {"perm": [0, 2, 1, 3]}),  # [N, position, ci, tile]
        ("MatMul", [], {}),  # u x tiles, broadcast over the frames: the weights go first
        ("Reshape", [const("flat", i64(0, A * A, -1))], {}),
        ("MatMul", [], {}),  # k_out x flat: [N, 4, 4, co, th, tw] as it lies in memory
        ("Reshape", [const("blocks", i64(0, M * M * co, th, tw))], {}),
        ("DepthToSpace", [], {"blocksize": M, "mode": "DCR"}),  # [N, co, th * 4, tw * 4]
    ]
    if (th * M, tw * M) != (site.h, site.w):
        steps.append(("Slice", [const("lo", i64(0, 0)), const("hi", i64(site.h, site.w)),
                                const("axes", i64(2, 3))], {}))
    u_name, k_out_name = const("u", u.astype(np.float32)), const("k_out", k_out.astype(np.float32))
    if b is not None:
        steps.append(("Add", [const("bias", b.reshape(1, co, 1, 1).astype(np.float32))], {}))
    nodes = []
    t = node.input[0]
    matmuls = iter([u_name, k_out_name])
    for k, (op, extra, attrs) in enumerate(steps):
        ins = [next(matmuls), t] if op == "MatMul" else [t, *extra]
        name = node.output[0] if k == len(steps) - 1 else f"{p}{k}"
        nodes.append(helper.make_node(op, ins, [name], name=f"{p}{op.lower()}{k}", **attrs))
        t = name
    return nodes, inits
