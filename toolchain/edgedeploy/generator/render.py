"""Jinja2 rendering of a bundle's scripts from ``templates/<family>/``.

Each output file has a template ``<file>.j2``; a family folder overrides a file by providing its
own template (usually ``{% extends "linux/<file>.j2" %}`` and one block), and falls back to
``linux/`` otherwise. StrictUndefined turns a missing context value into an error at build time,
never into an empty string in a script on a board.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2

from edgedeploy.errors import EdgeDeployError
from edgedeploy.generator.context import RenderContext
from edgedeploy.resources import templates_dir

BASE_FAMILY = "linux"

#: Bundle file -> template name (without the family folder); the unit's name is context-derived.
OUTPUTS = ("run.sh", "health.sh", "main.py", "edgedeploy.env", "service")


class TemplateError(EdgeDeployError):
    """A template is missing or failed to render (a packaging or template bug)."""


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # shell and Python, not HTML
    )


def template_name(family: str, output: str) -> str:
    """``<family>/<output>.j2`` when the family overrides it, else the linux base template."""
    env = environment()
    wanted = f"{family}/{output}.j2"
    try:
        env.get_template(wanted)
        return wanted
    except jinja2.TemplateNotFound:
        return f"{BASE_FAMILY}/{output}.j2"


def render(ctx: RenderContext, output: str) -> str:
    name = template_name(ctx.family, output)
    try:
        return environment().get_template(name).render(**ctx.as_dict())
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found under {templates_dir()}",
                            hint="a broken install: reinstall edgedeploy") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {name} failed to render: {exc}") from None


def render_all(ctx: RenderContext) -> dict[str, str]:
    """Bundle-relative path -> text for every rendered file."""
    out = {}
    for output in OUTPUTS:
        path = f"{ctx.service}.service" if output == "service" else output
        out[path] = render(ctx, output)
    return out
