"""Entry point: global options, the command modules, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import sys
import traceback

import typer
from rich.markup import escape

from edgedeploy import __version__
from edgedeploy.cli import output
from edgedeploy.errors import EdgeDeployError, ExitCode

try:  # typer >= 0.24 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

app = typer.Typer(
    name="edgedeploy",
    help="Plan, compile and deploy CNN inference on heterogeneous edge boards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # they print locals: hosts, keys
    rich_markup_mode=None,  # plain help: docstrings re-wrapped, no <bool> beside flags
    add_completion=False,  # `edgedeploy completion SHELL` instead
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Command modules under edgedeploy.cli; each has ``register(app)``. One line per verb.
COMMANDS = [
    "targets_cmd",
    "schema_cmd",
    "validate_cmd",
    "inspect_cmd",
    "zoo_cmd",
    "plan_cmd",
    "run_cmd",
    "bench_cmd",
    "profile_cmd",
    "costmodel_cmd",
    "build_cmd",
    "push_cmd",
    "infer_cmd",
    "deploy_cmd",
    "init_cmd",
    "refine_cmd",
    "completion_cmd",
]


def _version_text() -> str:
    parts = [f"edgedeploy {__version__}"]
    for label, module in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                          ("litert", "ai_edge_litert"), ("numpy", "numpy")):
        try:
            mod = importlib.import_module(module)
            version = getattr(mod, "__version__", None)
            if version is None:
                from importlib.metadata import version as dist_version

                version = dist_version("ai-edge-litert" if module == "ai_edge_litert" else module)
            parts.append(f"{label} {version}")
        except Exception:
            parts.append(f"{label} (not installed)")
    return "\n".join(parts)


def _version_callback(value: bool) -> None:
    if value:
        print(_version_text())
        raise typer.Exit()


@app.callback()
def _global(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print versions of edgedeploy, onnx, onnxruntime, LiteRT."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More logging (-vv: debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Plan, compile and deploy CNN inference on heterogeneous edge boards.

    Example: edgedeploy inspect resnet50.onnx
    """
    output.settings.verbosity = -1 if quiet else verbose
    output.settings.debug = debug
    output.setup_logging()


for _name in COMMANDS:
    importlib.import_module(f"edgedeploy.cli.{_name}").register(app)


def _init_completion() -> None:
    """Register typer's bash/zsh/fish completers (``add_completion=False`` skips it), so the
    script ``edgedeploy completion SHELL`` prints gets answers from this program."""
    from typer._completion_classes import completion_init

    completion_init()


_init_completion()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: run the app, map errors to documented exit codes."""
    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    as_json = "--json" in args
    output.settings.json_emitted = False

    def failed(code: int, message: str, hint: str | None = None, kind: str | None = None) -> int:
        if as_json:  # with --json a failure is one JSON object on stdout too
            output.emit_json_error(code, message, hint, kind)
        return code

    try:
        # piped help is not cut at 80 columns (a terminal's width still applies on a terminal)
        wide = {} if sys.stdout.isatty() else {"terminal_width": 160, "max_content_width": 160}
        rc = app(args=argv, standalone_mode=False, **wide)  # returns typer.Exit's code
    except EdgeDeployError as exc:
        if debug:
            traceback.print_exc()
        output.error(escape(str(exc)))
        return failed(exc.exit_code, exc.message, exc.hint, type(exc).__name__)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        output.error("aborted")
        return failed(ExitCode.FAILURE, "aborted")
    except KeyboardInterrupt:
        output.error("interrupted")
        return failed(130, "interrupted")
    except Exception as exc:  # click usage errors arrive here too
        if isinstance(exc, click_exceptions.UsageError):
            exc.show()
            return failed(ExitCode.BAD_INPUT, exc.format_message(), kind="UsageError")
        if isinstance(exc, click_exceptions.ClickException):
            exc.show()
            return failed(exc.exit_code, exc.format_message(), kind=type(exc).__name__)
        if debug:
            traceback.print_exc()
        hint = "rerun with --debug for the traceback and report it"
        output.error(f"internal error: {escape(type(exc).__name__)}: {escape(str(exc))}\n"
                     f"  hint: {hint}")
        return failed(ExitCode.FAILURE, f"internal error: {type(exc).__name__}: {exc}", hint,
                      "InternalError")
    return rc if isinstance(rc, int) else ExitCode.OK


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
