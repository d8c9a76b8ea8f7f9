"""Root Typer app: global options, command registration, and the one error -> exit-code map."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from pointpeft_cli import __version__, settings
from pointpeft_cli.cli.output import STATE, render_error
from pointpeft_cli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, PointPeftError, storage_error


def _debug_enabled() -> bool:
    return STATE.debug or settings.debug()


def _fail(exc: BaseException, code: int, message: str, hint: str | None) -> typer.Exit:
    if _debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    render_error(type(exc).__name__, message, code, hint)
    return typer.Exit(code)


def _internal(exc: BaseException) -> typer.Exit:
    hint = "re-run with POINTPEFT_DEBUG=1 for the traceback, and report it"
    first = repr(exc).splitlines()[0] if repr(exc) else type(exc).__name__
    return _fail(exc, EXIT_INTERNAL, f"internal error: {first}", hint)


class PointPeftGroup(TyperGroup):
    """Maps PointPeftError, interrupts and internal errors to one-line messages and exit codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except PointPeftError as exc:
            raise _fail(exc, exc.exit_code, exc.message, exc.hint) from None
        except KeyboardInterrupt as exc:
            raise _fail(
                exc, EXIT_INTERRUPTED, "interrupted", "re-run the command (runs: add --resume)"
            ) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except OSError as exc:
            err = storage_error(exc, verb=None)  # a read or a write: name the path
            if err is None:
                raise _internal(exc) from None
            raise _fail(exc, err.exit_code, err.message, err.hint) from None
        except Exception as exc:
            raise _internal(exc) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        argv = kwargs.get("args", args[0] if args else None)
        argv = list(sys.argv[1:] if argv is None else argv)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as exc:  # click usage errors: bad flags, missing arguments
            code = int(getattr(exc, "exit_code", 2))
            fmt = getattr(exc, "format_message", None)
            message = fmt() if callable(fmt) else str(exc)
            ctx = getattr(exc, "ctx", None)
            hint = f"see `{ctx.command_path} --help`" if ctx is not None else "see --help"
            render_error("UsageError", message, code, hint, json_mode="--json" in argv)
            rv = code
        code = rv if isinstance(rv, int) else 0
        if standalone:
            sys.exit(code)
        return code


app = typer.Typer(
    name="pointpeft",
    cls=PointPeftGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Parameter-efficient fine-tuning (Point-PEFT) of pre-trained 3D point-cloud models.",
)


def version_line() -> str:
    """`pointpeft X.Y.Z (torch A.B, cuda: yes|no)`."""
    import torch

    cuda = "yes" if torch.cuda.is_available() else "no"
    return f"pointpeft {__version__} (torch {torch.__version__}, cuda: {cuda})"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit(0)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from rich.logging import RichHandler

    from pointpeft_cli.cli.output import stderr_console

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("pointpeft_cli")
    root.handlers[:] = [
        RichHandler(console=stderr_console(), show_path=False, tracebacks_show_locals=False)
    ]
    root.setLevel(level)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show versions and exit."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only the result.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (same as POINTPEFT_DEBUG=1).")
    ] = False,
) -> None:
    """Parameter-efficient fine-tuning (Point-PEFT) of pre-trained 3D point-cloud models."""
    STATE.verbose, STATE.quiet, STATE.debug, STATE.current = verbose, quiet, debug, None
    _setup_logging(verbose, quiet)


# --- command registration (one line per command module; engines must exist: no stubs) ---
from pointpeft_cli.cli import download as _download  # noqa: E402
from pointpeft_cli.cli import evaluate as _evaluate  # noqa: E402
from pointpeft_cli.cli import export as _export  # noqa: E402
from pointpeft_cli.cli import finetune as _finetune  # noqa: E402
from pointpeft_cli.cli import memory_bank as _memory_bank  # noqa: E402
from pointpeft_cli.cli import predict as _predict  # noqa: E402
from pointpeft_cli.cli.cache import cache_app  # noqa: E402

app.command("download", epilog=_download.EXAMPLES)(_download.download)
app.add_typer(cache_app, name="cache")
app.command("build-memory-bank", epilog=_memory_bank.EXAMPLES)(_memory_bank.build_memory_bank)
app.command("finetune", epilog=_finetune.EXAMPLES)(_finetune.finetune)
app.command("evaluate", epilog=_evaluate.EXAMPLES)(_evaluate.evaluate)
app.command("export-adapter", epilog=_export.EXAMPLES)(_export.export_adapter)
app.command("predict", epilog=_predict.EXAMPLES)(_predict.predict)
from pointpeft_cli.cli import inspect as _inspect  # noqa: E402

app.command("inspect", epilog=_inspect.EXAMPLES)(_inspect.inspect)
from pointpeft_cli.cli import pretrain as _pretrain  # noqa: E402

app.command("pretrain", epilog=_pretrain.EXAMPLES)(_pretrain.pretrain)
# (end of command registration)


def main() -> None:
    """Console-script entry point."""
    app()
