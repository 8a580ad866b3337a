"""fp16 stages: which clusters of a plan compute fp16 (``model.precision: fp16``).

The precision record (``planner.precision``) says fp16 was asked for and accepted by the accuracy
guard; which stages then compute it is a fact of the board (``Cluster.fp16_arithmetic``) and of
the stage (LiteRT segments; native and onnxruntime layers stay fp32). Light on imports: the
lockfile builder, refinement and measure-to-decide all ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.runtime import ir
from edgedeploy.runtime.vocab import FP16, LITERT


def half_clusters(graph: ir.Graph, target: Any) -> frozenset[str]:
    """The clusters of ``target`` whose LiteRT segments compute fp16 in a plan of ``graph``:
    those with fp16 arithmetic, where the graph's precision record chose fp16 (none else)."""
    from edgedeploy.planner.precision import SOURCE_KEY

    if (graph.source.get(SOURCE_KEY) or {}).get("chosen") != FP16:
        return frozenset()
    return frozenset(c.name for c in target.clusters if c.fp16_arithmetic)


def computes_fp16(cluster: str, choices: Sequence[str], half: frozenset[str]) -> bool:
    """Whether a stage on ``cluster`` running ``choices`` computes fp16: its cluster does and
    it runs LiteRT segments (native and onnxruntime layers stay fp32)."""
    return cluster in half and LITERT in choices


def check_half_targets(manifest: Any, aliases: Sequence[str]) -> None:
    """InputError (exit 2) where fp16 is asked for and no core of a target alias computes it
    (before the model is imported and guarded: a quick refusal)."""
    if manifest.model.precision != FP16:
        return
    from edgedeploy.boards.catalog import load_target

    for alias in aliases:
        _check(load_target(manifest.target(alias).board), alias)


def _check(target: Any, alias: str) -> None:
    if not any(c.fp16_arithmetic for c in target.clusters):
        raise InputError(
            f"precision fp16: no core of {alias} ({target.name}: "
            f"{', '.join(sorted({c.core_type for c in target.clusters}))}) computes fp16",
            hint="plan this target fp32 (or int8); fp16 needs cores with fp16 arithmetic "
                 "(Cortex-A55/A75/A76/A78, Carmel; x86 avx512_fp16), `fp16_arithmetic: true` "
                 "in the board's clusters")
