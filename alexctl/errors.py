"""The two ways a command can fail, and the exit status each one means.

Exit codes, for every command (docs/cli.md):
  0  done
  1  the work failed (WorkFailed, or a bug: an unexpected exception)
  2  bad usage or bad input (UserError): one sentence naming the culprit
"""


class UserError(Exception):
    """Bad usage or bad input. The message is one sentence that names the file, option or value at fault."""

    exit_code = 2


class WorkFailed(Exception):
    """The input was acceptable but the work did not succeed (for example `--strict` with skipped files).
    `summary`: what the command did before it failed, printed with --json beside the error."""

    exit_code = 1

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}
