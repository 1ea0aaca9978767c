"""The `alexctl` command: one typer app, one module per subcommand.

Every subcommand follows the conventions in docs/cli.md: defaults are the paper's, `--json`
prints one JSON object on stdout (on failure too), progress goes to stderr, and every error is
one sentence `alexctl: error: ...` with exit status 2 (bad input, including option errors the
parser finds) or 1 (the work failed, or a bug), with a traceback only under `--debug` (or
ALEXCTL_DEBUG=1).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import traceback

import typer
from typer.core import TyperCommand, TyperGroup

from alexctl import __version__
from alexctl.errors import UserError, WorkFailed

PANELS = ("Arguments", "Data", "Model", "Optimisation", "Checkpoints", "Runtime", "Output", "Options")


class _Command(TyperCommand):
    """--help with the options grouped in panels (data, model, optimisation, runtime, output) and
    metavars that say what to type (DIR, FILE, N, X, [a|b]), never an internal type name."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = _help_record(param, ctx)
            if record is not None:
                panel = (
                    "Arguments"
                    if param.param_type_name == "argument"
                    else (getattr(param, "rich_help_panel", None) or "Options")
                )
                groups.setdefault(panel, []).append(record)
        for panel in sorted(groups, key=lambda p: PANELS.index(p) if p in PANELS else len(PANELS)):
            with formatter.section(panel):
                formatter.write_dl(groups[panel])


def _help_record(param, ctx) -> tuple[str, str] | None:
    if getattr(param, "hidden", False):
        return None
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names, text = record
    if param.param_type_name == "argument":
        return param.metavar or param.name.upper(), text
    return re.sub(r"<(path|int|float|str|text|int range|float range)>", _plain_metavar, names), text


def _plain_metavar(match) -> str:
    """What to type, not the parser's type name: <path> -> PATH, <int> -> N, <float> -> X, <str> -> TEXT."""
    return {"path": "PATH", "int": "N", "int range": "N", "float": "X", "float range": "X"}.get(match[1], "TEXT")


class _Commands(TyperGroup):
    """Turns every error into one line on stderr (and a JSON object with --json) with the documented status."""

    def list_commands(self, ctx):  # in the order of the pipeline, not alphabetical
        return list(self.commands)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        wants_json = "--json" in args
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except Exception as e:
            code = _report_error(e, wants_json, debug="--debug" in args)
        except KeyboardInterrupt as e:
            code = _report_error(e, wants_json, debug="--debug" in args)
        if standalone_mode:
            sys.exit(code)
        return code


def _report_error(e: BaseException, wants_json: bool, debug: bool) -> int:
    """Print the error as alexctl prints every error and return the exit status."""
    if type(e).__name__ == "NoArgsIsHelpError":  # `alexctl` or `alexctl train` alone: the help, as asked
        e.show()
        return 0
    if type(e).__name__ == "Abort":
        e = KeyboardInterrupt()
    if isinstance(e, OSError) and e.errno == errno.EPIPE:  # `alexctl ... | head`: the reader went away
        return 1
    code, sentence = _classify(e)
    if debug or os.environ.get("ALEXCTL_DEBUG", "") not in ("", "0"):
        traceback.print_exception(e, file=sys.stderr)
    print(f"alexctl: error: {sentence}", file=sys.stderr, flush=True)
    if wants_json:
        payload = {
            **getattr(e, "summary", {}),
            "ok": False,
            "exit_code": code,
            "error": sentence,
            "alexctl_version": __version__,
        }
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
        sys.stdout.flush()
    return code


def _classify(e: BaseException) -> tuple[int, str]:
    if isinstance(e, (UserError, WorkFailed)):
        return e.exit_code, str(e)
    if isinstance(e, KeyboardInterrupt):
        return 130, "interrupted."
    if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # the parser's usage errors
        hint = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
        message = e.format_message().replace("Value error, ", "").strip()
        return 2, message + ("" if message.endswith((".", "?")) else ".") + hint
    if isinstance(e, OSError):
        where = f" {e.filename}" if e.filename else ""
        if e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EROFS):
            return 2, f"{where.strip() or 'a path'}: {e.strerror or e}."
        return 1, f"{e.strerror or e}:{where or ' (no path named)'}."
    if isinstance(e, MemoryError):
        return 1, "out of memory (try a smaller --batch-size, or another --residency)."
    return 1, f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)."


app = typer.Typer(
    name="alexctl",
    cls=_Commands,
    help="Reproduce and extend AlexNet (Krizhevsky, Sutskever, Hinton 2012): "
    "preprocess -> train -> eval -> ensemble, sharing files through data and run directories.",
    no_args_is_help=True,
    add_completion=True,
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
    from alexctl.cli import (
        bench,
        demo_data,
        ensemble,
        evaluate,
        export,
        gpu_check,
        predict,
        preprocess,
        report,
        status,
        stock_recipe,
        train,
    )

    def add(name: str, function, **kwargs) -> None:
        app.command(name, cls=_Command, **kwargs)(function)

    add("demo-data", demo_data.command, no_args_is_help=True)
    add("preprocess", preprocess.command, no_args_is_help=True)
    add("train", train.command, no_args_is_help=True)
    add("eval", evaluate.command, no_args_is_help=True)
    add("evaluate", evaluate.command, no_args_is_help=True, hidden=True)  # the same command, spelled out
    add("ensemble", ensemble.command, no_args_is_help=True)
    add("predict", predict.command, no_args_is_help=True)
    add("export", export.command, no_args_is_help=True)
    add("report", report.command, no_args_is_help=True)
    add("status", status.command, no_args_is_help=True)
    add("bench", bench.command)
    add("gpu-check", gpu_check.command)
    add("stock-recipe", stock_recipe.command, no_args_is_help=True)


_register()


def main() -> None:
    """Entry point of the `alexctl` script. `--debug` may come anywhere on the line."""
    args = sys.argv[1:]
    if "--debug" in args[1:]:
        args = ["--debug"] + [a for a in args if a != "--debug"]
    app(args=args, prog_name="alexctl")
