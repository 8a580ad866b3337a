"""Typed, validated inputs: manifests and board descriptors (pydantic), loaded from YAML with
positions so every error names file:line:column."""

from __future__ import annotations

from typing import Any

from edgedeploy.schemas.loader import load_manifest, load_yaml_model
from edgedeploy.schemas.manifest import Manifest, ModelSpec, TargetRef
from edgedeploy.schemas.target import Cluster, Gpu, Target

__all__ = ["Cluster", "Gpu", "Manifest", "ModelSpec", "Target", "TargetRef", "json_schema",
           "load_manifest", "load_yaml_model"]

SCHEMAS = ("manifest", "target", "plan")


def json_schema(which: str) -> dict[str, Any]:
    """Draft-7-compatible JSON Schema of ``"manifest"``, ``"target"`` or ``"plan"`` (the lockfile).

    pydantic writes shared parts under ``$defs`` (draft 2019-09); draft-7 tools expect
    ``definitions``, so the references are rewritten to point there.
    """
    if which not in SCHEMAS:
        raise ValueError(f"unknown schema {which!r}; choose one of {', '.join(SCHEMAS)}")
    from edgedeploy.schemas.plan import Plan

    model = {"manifest": Manifest, "target": Target, "plan": Plan}[which]
    schema = model.model_json_schema(mode="validation", ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", None)
    out: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#",
                           "$id": f"https://edgedeploy.dev/schema/{which}.json", **schema}
    if definitions:
        out["definitions"] = definitions
    return out
