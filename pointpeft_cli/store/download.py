"""Streaming HTTP(S) downloads: sha256 while streaming, bounded Range resumes, partial records."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pointpeft_cli import __version__
from pointpeft_cli.errors import (
    AssetNotCachedError,
    AssetUnavailableError,
    ChecksumMismatchError,
    NetworkError,
)
from pointpeft_cli.store.cache import (
    PARTIAL_RECORD_SUFFIX,
    PARTIAL_SUFFIX,
    atomic_write_text,
    ensure_free_space,
    offline_hint,
    short_id,
)
from pointpeft_cli.store.hashing import CHUNK
from pointpeft_cli.store.registry import BROKEN_TLS_HOSTS

log = logging.getLogger(__name__)

_RETRYABLE = (
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    ConnectionError,
    TimeoutError,
    urllib.error.URLError,
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransferProgress(Protocol):
    """Where byte counts go (the CLI adapts a Rich bar; library code prints nothing)."""

    def start(self, description: str, total: int | None, completed: int = 0) -> None: ...

    def advance(self, n: int) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int | None, completed: int = 0) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: offline guard, TLS, timeout, retries, and the free-space factor."""

    asset_id: str
    offline: bool = False
    insecure_tls: bool = False
    timeout: float = 60.0
    max_attempts: int = 4
    space_factor: float = 1.1
    retry_delay: float = 0.5


@dataclass(frozen=True)
class Fetched:
    """A completely downloaded file, still under its `*.incomplete` name."""

    path: Path
    bytes: int
    sha256: str
    resumed: bool


class _Restart(Exception):
    """The server cannot continue the partial file: start again from byte 0."""


class _Partial:
    """A resumable partial download: `<name>.<id>.incomplete` plus a JSON record beside it."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record

    @property
    def record_path(self) -> Path:
        return self.path.with_name(self.path.name[: -len(PARTIAL_SUFFIX)] + PARTIAL_RECORD_SUFFIX)

    @classmethod
    def find_or_create(cls, dest_dir: Path, name: str, url: str) -> _Partial:
        for rec_path in sorted(dest_dir.glob(f"{name}.*{PARTIAL_RECORD_SUFFIX}")):
            try:
                record = json.loads(rec_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            part = rec_path.with_name(rec_path.name[: -len(PARTIAL_RECORD_SUFFIX)] + PARTIAL_SUFFIX)
            if record.get("url") == url and part.is_file():
                return cls(part, record)
        return cls(dest_dir / f"{name}.{short_id()}{PARTIAL_SUFFIX}", {"url": url})

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def save_record(self) -> None:
        atomic_write_text(self.record_path, json.dumps(self.record, sort_keys=True))

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.record = {"url": self.record["url"]}

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.record_path.unlink(missing_ok=True)


def finish_partial(fetched: Fetched, dest: Path) -> None:
    """Move a verified download to `dest` and drop its resume record."""
    rec = _Partial(fetched.path, {})
    fetched.path.replace(dest)
    rec.record_path.unlink(missing_ok=True)


def discard_partial(fetched: Fetched) -> None:
    """Delete a download that failed verification (it must never be resumed)."""
    _Partial(fetched.path, {}).discard()


def ensure_online(opts: FetchOptions, url: str) -> None:
    """Raise before any socket is opened when offline mode is on."""
    if opts.offline:
        raise AssetNotCachedError(
            f"{opts.asset_id} is not cached and offline mode forbids fetching {url}",
            hint=offline_hint(opts.asset_id),
        )


def _opener(insecure: bool) -> urllib.request.OpenerDirector:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))


def _total_from(resp: Any, offset: int) -> tuple[int, int | None]:
    """(start offset the server honours, total size or None) from a response."""
    if resp.status == 206:
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise _Restart
        total = match.group(3)
        return offset, None if total == "*" else int(total)
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _validators(resp: Any) -> dict[str, str | None]:
    return {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}


def _request(url: str, part: _Partial, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": f"pointpeft/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        # If-Range makes a server whose file changed send the new file whole (200), not a splice
        validator = part.record.get("etag") or part.record.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    return urllib.request.Request(url, headers=headers)


def _stream(resp: Any, part: _Partial, offset: int, progress: TransferProgress) -> str:
    digest = hashlib.sha256()
    if offset:
        with open(part.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    with open(part.path, "ab" if offset else "wb") as fh:
        while chunk := resp.read(CHUNK):
            fh.write(chunk)
            digest.update(chunk)
            progress.advance(len(chunk))
    return digest.hexdigest()


def _attempt(
    url: str, part: _Partial, opts: FetchOptions, expected: int | None, progress: TransferProgress
) -> Fetched:
    offset = part.size()
    with _opener(opts.insecure_tls).open(_request(url, part, offset), timeout=opts.timeout) as resp:
        start, total = _total_from(resp, offset)
        if start == 0 and offset:
            log.info("server ignored the range request; restarting %s from byte 0", url)
            part.reset()
        validators = _validators(resp)
        if start and any(part.record.get(k) != v for k, v in validators.items()):
            raise _Restart
        if expected is not None and total is not None and total != expected:
            part.discard()
            raise ChecksumMismatchError(
                f"{url} is {total:,} B, but {opts.asset_id} should be {expected:,} B",
                hint="the server sends a different file; check the URL or use another mirror",
            )
        part.record.update(validators, total=total)
        part.save_record()
        if total is not None:
            ensure_free_space(part.path.parent, int((total - start) * opts.space_factor), url)
        progress.start(opts.asset_id, total, completed=start)
        sha = _stream(resp, part, start, progress)
    size = part.size()
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return Fetched(part.path, size, sha, resumed=start > 0)


def _network_error(url: str, exc: BaseException, part: _Partial) -> NetworkError:
    reason = getattr(exc, "reason", exc)
    hint = f"re-run the same command to resume ({part.size():,} B kept)"
    if isinstance(reason, ssl.SSLCertVerificationError):
        host = urlsplit(url).hostname
        hint = "the server's TLS certificate did not verify" + (
            "; this host's certificate is known to be expired: --insecure-tls skips the check"
            if host in BROKEN_TLS_HOSTS
            else ""
        )
    return NetworkError(f"download of {url} failed: {reason}", hint=hint)


def fetch_url(
    url: str,
    dest_dir: Path,
    name: str,
    opts: FetchOptions,
    expected_size: int | None = None,
    progress: TransferProgress | None = None,
) -> Fetched:
    """Download `url` into `dest_dir/<name>.<id>.incomplete`, resuming a partial one if present.

    Interrupted transfers are retried up to `opts.max_attempts` times with a Range request; a
    server that ignores Range (200), rejects it (416) or whose file changed (validators) makes
    the download restart from byte 0. On failure the partial file and its record stay for the
    next call to resume (`cache prune` removes them).

    Raises:
        AssetNotCachedError: offline mode is on (no socket is opened).
        NetworkError: the transfer failed `opts.max_attempts` times.
        AssetUnavailableError: the server answered with an HTTP error.
        ChecksumMismatchError: the server's size differs from `expected_size`.
    """
    ensure_online(opts, url)
    progress = progress or _NoProgress()
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = _Partial.find_or_create(dest_dir, name, url)
    last: BaseException | None = None
    for attempt in range(opts.max_attempts):
        if attempt:
            time.sleep(opts.retry_delay * attempt)
        try:
            return _attempt(url, part, opts, expected_size, progress)
        except _Restart as exc:
            part.reset()
            last = exc
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                part.reset()
            elif exc.code < 500:
                raise AssetUnavailableError(
                    f"{url} answered HTTP {exc.code} {exc.reason}",
                    hint="the file may have moved; try `--from` with a mirror or a local copy",
                ) from None
            last = exc
        except _RETRYABLE as exc:
            if isinstance(getattr(exc, "reason", None), ssl.SSLError):
                raise _network_error(url, exc, part) from None  # retrying cannot help
            log.info("transfer interrupted (%s); %d B kept", exc, part.size())
            last = exc
    raise _network_error(url, last or TimeoutError("no attempt was made"), part)
