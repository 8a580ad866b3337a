"""The generator: plan + graph -> a deterministic runner bundle from templates/<family>/."""

from __future__ import annotations

from edgedeploy.generator.bundle import BundleInfo, build_bundle, write_npz
from edgedeploy.generator.context import (
    FAMILIES,
    BuildInput,
    RenderContext,
    from_execute_plans,
)
from edgedeploy.runtime.runner_config import PlanConfig, StageConfig

__all__ = ["FAMILIES", "BuildInput", "BundleInfo", "PlanConfig", "RenderContext", "StageConfig",
           "build_bundle", "from_execute_plans", "write_npz"]
