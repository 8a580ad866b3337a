"""Shell-completion answers for values: target aliases, board names, zoo models.

Completion runs on every TAB, so each answer is cheap and never fails loudly: a manifest that does
not parse simply contributes no aliases.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgedeploy import api


def _manifest(ctx: typer.Context) -> Path | None:
    # -m, or `bench`'s first word; one first on the line that completion leaves unparsed
    for value in [ctx.params.get("manifest"), ctx.params.get("source"), *ctx.args]:
        if value and str(value).endswith((".yaml", ".yml")):
            return Path(value)
    return api.manifest_path(None)


def targets(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The manifest's target aliases (named on the line, or ./edgedeploy.yaml), then the boards."""
    path = _manifest(ctx)
    found = [(a, f"target in {path.name}") for a in api.target_aliases(path)] if path else []
    seen = {a for a, _ in found}
    found += [(b, "board") for b in api.list_targets() if b not in seen]
    return [(v, h) for v, h in found if v.startswith(incomplete)]


def boards(incomplete: str) -> list[str]:
    return [b for b in api.list_targets() if b.startswith(incomplete)]


def zoo_models(incomplete: str) -> list[str]:
    return [m["name"] for m in api.zoo_models() if str(m["name"]).startswith(incomplete)]
