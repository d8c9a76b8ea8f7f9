"""`pointpeft download`: fetch or import registry assets into the cache, verified."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pointpeft_cli import settings
from pointpeft_cli.cli.options import CacheDirOpt, JsonOpt, OfflineOpt
from pointpeft_cli.cli.output import Output
from pointpeft_cli.errors import UsageError

if TYPE_CHECKING:
    from pointpeft_cli.store.install import InstallResult

EXAMPLES = (
    "[bold]Examples[/bold]\n\n  pointpeft download --list\n\n  pointpeft download point-mae"
    "\n\n  pointpeft download scanobjectnn --from ~/Downloads/h5_files.zip --json"
)


class BarAdapter:
    """Feeds the store's byte counts into one Rich progress task (or the silent stand-in)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.task: Any = None

    def start(self, description: str, total: int | None, completed: int = 0) -> None:
        if self.task is None:
            self.task = self.bar.add_task(description, total=total, completed=completed)
        else:
            self.bar.update(self.task, description=description, total=total, completed=completed)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError


def _list(out: Output, cache_dir: Any) -> None:
    from pointpeft_cli.engine.weights import embedded_weights_path
    from pointpeft_cli.store.cache import asset_dir, read_manifest
    from pointpeft_cli.store.registry import ASSETS

    root = settings.cache_root(cache_dir)

    def present(a: Any) -> bool:
        if a.kind == "embedded":  # ships inside the package
            return embedded_weights_path(a.id) is not None
        return read_manifest(asset_dir(root, a)) is not None

    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "title": a.title,
            "bytes": a.file.size,
            "cached": present(a),
            "license": a.license,
            "url": a.url,
            "howto": a.howto,
        }
        for a in ASSETS.values()
    ]

    def human(console: Console) -> None:
        from rich.table import Table

        table = Table("asset", "kind", "size", "cached", "source", "licence", box=None)
        for r in rows:
            source = (
                "ships in package"
                if r["kind"] == "embedded"
                else "download"
                if r["url"]
                else "manual: --from PATH"
            )
            cached = "[green]yes[/green]" if r["cached"] else "no"
            table.add_row(r["id"], r["kind"], _size(r["bytes"]), cached, source, r["license"])
        console.print(table)
        console.print(f"cache: {root}")

    out.result({"root": str(root), "assets": rows}, human, primary="\n".join(ASSETS))


def _describe(console: Console, res: InstallResult) -> None:
    if res.status == "cached":
        console.print(f"[bold]{res.asset_id}[/bold]: already cached and verified at {res.path}")
        console.print("  (use --force to fetch it again)")
        return
    what = "downloaded" if res.status == "downloaded" else "imported"
    resumed = " (resumed)" if res.resumed else ""
    console.print(f"[bold]{res.asset_id}[/bold]: {what}{resumed} and verified -> {res.path}")
    if res.converted:
        console.print(f"  layout checked; converted once to {res.converted} (original kept)")
    if not res.trust_on_first_use:
        console.print(f"  sha256 {res.sha256} matches the published checksum")
    elif res.pinned_now:
        console.print(
            f"  sha256 {res.sha256} recorded now (trust on first use: upstream publishes no "
            "checksum, so this copy is trusted; later downloads and loads must match it)"
        )
    else:
        console.print(f"  sha256 {res.sha256} matches the one recorded on first download")
    if res.replaced_sha256:
        console.print(f"  [yellow]replaced the copy with sha256 {res.replaced_sha256}[/yellow]")


def download(
    assets: Annotated[
        list[str] | None,
        typer.Argument(help="Asset ids (see --list).", show_default=False),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List every asset with size and cached state.")
    ] = False,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Import from a local file, folder, .zip/.tar archive, or a mirror URL.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch again and replace the cached copy.")
    ] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow a checkpoint that needs full unpickling (runs code: trusted files only).",
        ),
    ] = False,
    insecure_tls: Annotated[
        bool,
        typer.Option(
            "--insecure-tls",
            help="Skip TLS certificate checks, only for shapenet.cs.stanford.edu assets "
            "(expired certificate upstream); the sha256 checks stay on.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Network timeout in seconds.")
    ] = 60.0,
    offline: OfflineOpt = False,
    cache_dir: CacheDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Download or import checkpoints and data sets into the cache, verified.

    Checkpoints must match the upstream key/shape layout; they are converted once to
    model.safetensors. A sha256 that upstream does not publish is recorded on first
    download and enforced afterwards (trust on first use).
    """
    out = Output("download", json_)
    if list_:
        _list(out, cache_dir)
        return
    if not assets:
        raise UsageError("name at least one asset, or use --list", hint="pointpeft download --list")
    if from_ is not None and len(assets) != 1:
        raise UsageError("--from imports exactly one asset", hint="name one asset id with --from")
    from pointpeft_cli.store.install import InstallOptions, install_asset

    root = settings.cache_root(cache_dir)
    opts = InstallOptions(
        source=from_,
        force=force,
        offline=settings.is_offline(offline),
        trust_pickle=trust_pickle,
        insecure_tls=insecure_tls,
        timeout=timeout,
    )
    if insecure_tls:
        out.warn("TLS certificate verification is OFF for shapenet.cs.stanford.edu downloads")
    results = []
    for asset_id in assets:
        wait_note = f"another pointpeft process is fetching {asset_id}; waiting for it"
        with out.progress() as bar:
            results.append(
                install_asset(
                    root, asset_id, opts, BarAdapter(bar), lambda m=wait_note: out.info(m)
                )
            )

    def human(console: Console) -> None:
        for res in results:
            _describe(console, res)

    payload = {"assets": [r.to_json() for r in results]}
    out.result(payload, human, primary="\n".join(str(r.path) for r in results))
