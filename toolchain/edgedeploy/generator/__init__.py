"""The generator: plan + graph -> a deterministic runner bundle from templates/<family>/."""

from __future__ import annotations

from edgedeploy.generator.bundle import BundleInfo, build_bundle, write_npz
from edgedeploy.generator.context import (
    FAMILIES,
    BuildInput,
    PlanInput,
    RenderContext,
    StageInput,
    from_execute_plans,
)

__all__ = ["FAMILIES", "BuildInput", "BundleInfo", "PlanInput", "RenderContext", "StageInput",
           "build_bundle", "from_execute_plans", "write_npz"]
