"""The ``xtrieve`` click group. Commands live in small modules listed in COMMAND_MODULES.

To add a command, write ``cli/commands_<name>.py`` defining click commands and add its
module name below; a module that is not there yet is skipped.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from xtrieve import __version__
from xtrieve.errors import XtrieveError

COMMAND_MODULES = (
    "xtrieve.cli.commands_index",
    "xtrieve.cli.commands_search",
    "xtrieve.cli.commands_train",
    "xtrieve.cli.commands_eval",
)


class XtrieveGroup(click.Group):
    """A group that prints any XtrieveError as one ``error: ...`` line and exits 1; output cut
    short by its reader (``| head``) ends the command quietly, with status 0; Ctrl-C exits 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _discard_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:  # Ctrl-C: the shell's status for a SIGINT, not an ordinary error's
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (XtrieveError, OSError) as exc:  # (names from an index folder may hold escape sequences)
            from xtrieve.cli.formats import shown

            click.echo(f"error: {shown(exc)}", err=True)
            ctx.exit(1)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left at exit raises nothing."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture output)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@click.group(cls=XtrieveGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xtrieve")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """xtrieve: multi-vector (late-interaction) retrieval."""
    # the CLI shows its own progress; silence the model loader's per-weight bar
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _utf8_output()
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _BetweenBars()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _utf8_output() -> None:
    """Output in UTF-8 wherever the locale's encoding is another (Windows' cp1252 in a redirected
    run file could not write most ids); a terminal keeps its encoding, with escapes for what it lacks."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding == "utf8" or not hasattr(stream, "reconfigure"):
            continue
        try:
            tty = stream.isatty()
            stream.reconfigure(**({"errors": "backslashreplace"} if tty else {"encoding": "utf-8"}))
        except (OSError, ValueError):  # closed, or already written to in another encoding
            continue


class _BetweenBars(logging.Handler):
    """Writes log lines to stderr above a running progress bar, not glued onto its line."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except (OSError, ValueError):  # stderr closed
            self.handleError(record)


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        for obj in vars(module).values():
            if isinstance(obj, click.Command) and obj.name not in main.commands:
                main.add_command(obj)


_register()


if __name__ == "__main__":
    main()
