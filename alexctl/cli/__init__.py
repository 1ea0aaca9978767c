"""The `alexctl` command: one typer app, one module per subcommand.

Every subcommand follows the conventions in docs/cli.md: defaults are the paper's,
`--json` prints one JSON object on stdout and nothing else, progress goes to stderr,
and errors are one sentence with exit status 2 (bad input) or 1 (the work failed),
with a traceback only under `--debug` (or ALEXCTL_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from typer.core import TyperGroup

from alexctl import __version__
from alexctl.errors import UserError, WorkFailed


class _Commands(TyperGroup):
    """Turns our exceptions into one line on stderr and the documented exit status."""

    def list_commands(self, ctx):  # in the order of the pipeline, not alphabetical
        return list(self.commands)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, WorkFailed) as e:
            _report(e, f"alexctl: error: {e}", ctx)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _report(None, "alexctl: interrupted.", ctx)
            raise typer.Exit(130) from None
        except Exception as e:
            if hasattr(e, "exit_code"):  # typer's (and click's) own exits and usage errors
                raise
            # A bug: say so plainly, keep the traceback for --debug.
            _report(e, f"alexctl: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", ctx)
            raise typer.Exit(1) from None


def _report(exc: BaseException | None, line: str, ctx) -> None:
    if exc is not None and _debug(ctx):
        traceback.print_exception(exc, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)


def _debug(ctx) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("ALEXCTL_DEBUG", "") not in ("", "0")


app = typer.Typer(
    name="alexctl",
    cls=_Commands,
    help="Reproduce and extend AlexNet (Krizhevsky, Sutskever, Hinton 2012): "
    "preprocess -> train -> eval -> ensemble, sharing files through data and run directories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # A fixed width: --help reads the same everywhere, and docs/cli.md is generated from it.
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100},
)


def _version(value: bool) -> None:
    if value:
        print(f"alexctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = {"debug": debug}


def _register() -> None:
    from alexctl.cli import bench, demo_data, ensemble, evaluate, preprocess, report, status, train

    app.command("demo-data", no_args_is_help=True)(demo_data.command)
    app.command("preprocess", no_args_is_help=True)(preprocess.command)
    app.command("train", no_args_is_help=True)(train.command)
    app.command("eval", no_args_is_help=True)(evaluate.command)
    app.command("evaluate", no_args_is_help=True, hidden=True)(evaluate.command)  # the same command, spelled out
    app.command("ensemble", no_args_is_help=True)(ensemble.command)
    app.command("report", no_args_is_help=True)(report.command)
    app.command("status", no_args_is_help=True)(status.command)
    app.command("bench")(bench.command)


_register()


def main() -> None:
    """Entry point of the `alexctl` script. `--debug` may come anywhere on the line."""
    args = sys.argv[1:]
    if "--debug" in args[1:]:
        args = ["--debug"] + [a for a in args if a != "--debug"]
    app(args=args, prog_name="alexctl")
