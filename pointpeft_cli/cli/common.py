"""Helpers shared by the training-side commands: config from flags, progress bridges."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pointpeft_cli.cli.output import Output

log = logging.getLogger(__name__)


def tune_allocator() -> None:
    """The training allocator settings (`engine.allocator`), for commands that run models."""
    from pointpeft_cli.engine.allocator import configure_allocator

    log.debug(configure_allocator().detail)


def run_config(
    preset: str | None,
    sets: list[str] | None,
    flags: dict[str, Any],
) -> Any:
    """defaults < preset (explicit or `<backbone>_<task>`) < --set < flags."""
    from pointpeft_cli.config.presets import choose_preset, resolve_config

    chosen = choose_preset(preset, flags.get("model.backbone"), flags.get("data.task"))
    clean = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}
    return resolve_config(chosen, sets or [], clean), chosen


@contextmanager
def progress_bridge(out: Output) -> Iterator[Callable[[str, int | None], Callable[[int], None]]]:
    """A `progress(description, total) -> advance(n)` factory drawing Rich bars on stderr."""
    with out.progress(unit="items") as bar:

        def factory(description: str, total: int | None) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n: bar.advance(task, n)

        yield factory
