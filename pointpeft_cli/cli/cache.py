"""`pointpeft cache ls | verify | rm | prune`: inspect and maintain the asset cache."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pointpeft_cli import settings
from pointpeft_cli.cli.download import BarAdapter
from pointpeft_cli.cli.options import CacheDirOpt, JsonOpt
from pointpeft_cli.cli.output import Output, emit_json, render_error
from pointpeft_cli.errors import EXIT_INTEGRITY, ChecksumMismatchError

cache_app = typer.Typer(
    name="cache",
    help="Inspect and maintain the asset cache (ls, verify, rm, prune).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def examples(*commands: str) -> str:
    """The help epilog: copy-pasteable example command lines."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  {c}" for c in commands)


AssetArg = Annotated[str, typer.Argument(help="Asset id (see `pointpeft cache ls`).")]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@cache_app.command(
    "ls",
    epilog=examples("pointpeft cache ls", "pointpeft cache ls --json"),
)
def ls(cache_dir: CacheDirOpt = None, json_: JsonOpt = False) -> None:
    """List cached assets with size and state."""
    from pointpeft_cli.store.maintenance import scan

    out = Output("cache ls", json_)
    root = settings.cache_root(cache_dir)
    entries = scan(root)
    total = sum(e.bytes for e in entries)

    def human(console: Console) -> None:
        from rich.table import Table

        table = Table("asset", "kind", "size", "state", "sha256", box=None)
        for e in entries:
            state = "complete" if e.complete else "incomplete"
            state = state if e.known else "unknown (cache prune removes it)"
            table.add_row(e.id, e.kind, _mb(e.bytes), state, (e.sha256 or "")[:16])
        console.print(table if entries else "the cache is empty")
        console.print(f"{root}  total {_mb(total)}")

    payload = {"root": str(root), "assets": [e.to_json() for e in entries], "total_bytes": total}
    out.result(payload, human, primary=str(root))


@cache_app.command(
    "verify",
    epilog=examples("pointpeft cache verify", "pointpeft cache verify point-mae --json"),
)
def verify(
    asset: Annotated[
        str | None, typer.Argument(help="Only this asset (default: all).", show_default=False)
    ] = None,
    cache_dir: CacheDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-hash every cached file against its manifest (exit 4 on any mismatch)."""
    from pointpeft_cli.store.maintenance import verify as verify_cache

    out = Output("cache verify", json_)
    root = settings.cache_root(cache_dir)
    with out.progress() as bar:
        progress = BarAdapter(bar)
        progress.start("verifying", None)
        reports = verify_cache(root, asset, progress.advance)
    rows = [r.to_json() for r in reports]
    bad = [r for r in reports if r.complete and not r.ok]
    if bad:
        detail = "; ".join(f"{r.id}: {', '.join((r.mismatched + r.missing)[:3])}" for r in bad)
        err = ChecksumMismatchError(
            f"{len(bad)} cached asset(s) failed verification ({detail})",
            hint="re-fetch with `pointpeft download <id> --force`, or `pointpeft cache rm <id>`",
        )
        if not json_:
            _print_reports(out.console, rows)
            raise err
        render_error(type(err).__name__, err.message, EXIT_INTEGRITY, err.hint, json_mode=False)
        error = {"type": type(err).__name__, "message": err.message, "exit_code": EXIT_INTEGRITY}
        emit_json({"ok": False, "command": "cache verify", "assets": rows, "error": error})
        raise typer.Exit(EXIT_INTEGRITY)
    out.result(
        {"root": str(root), "assets": rows, "verified": sum(r.complete for r in reports)},
        lambda console: _print_reports(console, rows),
        primary=str(len(rows)),
    )


def _print_reports(console: Console, rows: list[dict]) -> None:
    if not rows:
        console.print("nothing to verify: no complete asset in the cache")
    for r in rows:
        if not r["complete"]:
            console.print(
                f"{r['id']}: incomplete (not verified; `pointpeft cache prune` cleans it)"
            )
        elif r["ok"]:
            console.print(
                f"{r['id']}: [green]ok[/green] ({r['files_checked']} files, {_mb(r['bytes'])})"
            )
        else:
            bad = ", ".join(r["mismatched"] + r["missing"])
            console.print(f"{r['id']}: [bold red]MISMATCH[/bold red] {bad}")
        if r["unexpected"]:
            console.print(f"  files not in the manifest: {', '.join(r['unexpected'][:5])}")


@cache_app.command(
    "rm",
    epilog=examples("pointpeft cache rm point-bert", "pointpeft cache rm modelnet40 --json"),
)
def rm(asset: AssetArg, cache_dir: CacheDirOpt = None, json_: JsonOpt = False) -> None:
    """Remove one asset from the cache."""
    from pointpeft_cli.store.maintenance import remove

    out = Output("cache rm", json_)
    removed = remove(settings.cache_root(cache_dir), asset)
    freed = sum(r.bytes for r in removed)

    def human(console: Console) -> None:
        for r in removed:
            console.print(f"removed {r.path} ({_mb(r.bytes)})")

    payload = {"removed": [r.to_json() for r in removed], "freed_bytes": freed}
    out.result(payload, human, primary=str(freed))


@cache_app.command(
    "prune",
    epilog=examples("pointpeft cache prune", "pointpeft cache prune --json"),
)
def prune(cache_dir: CacheDirOpt = None, json_: JsonOpt = False) -> None:
    """Remove partial downloads (*.incomplete) and entries the registry does not know."""
    from pointpeft_cli.store.maintenance import prune as prune_cache

    out = Output("cache prune", json_)
    removed, busy = prune_cache(settings.cache_root(cache_dir))
    freed = sum(r.bytes for r in removed)

    def human(console: Console) -> None:
        for r in removed:
            console.print(f"removed {r.path} ({r.reason}, {_mb(r.bytes)})")
        for asset_id in busy:
            console.print(f"skipped {asset_id}: a download of it is running")
        if not removed and not busy:
            console.print("nothing to prune")

    payload = {"removed": [r.to_json() for r in removed], "freed_bytes": freed, "skipped": busy}
    out.result(payload, human, primary=str(freed))
