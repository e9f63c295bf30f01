"""Progress lines with rate and ETA, so that a long prediction job is not silent.

`Progress` counts slices; the engines call `report_tile` after each tile (dense) or batch
(sliding) of a slice, and while `Progress.tiles()` is active those calls become log lines
too, at most one every `tile_every_s` seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_TILE_REPORTER: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "fibseg_tile_reporter", default=None
)


def report_tile(done: int, total: int) -> None:
    """An engine finished tile `done` of `total` of the current slice (a no-op unless a
    `Progress` listens)."""
    reporter = _TILE_REPORTER.get()
    if reporter is not None and total > 1:
        reporter(done, total)


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`total` slices of `voxels` voxels each; each finished slice (and, on big slices, tile)
    is logged with the rate in voxels/s and slices/min and the time left."""

    def __init__(
        self,
        log: logging.Logger,
        total: int,
        voxels: int,
        tile_every_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.total, self.voxels = log, total, voxels
        self.tile_every_s, self.clock = tile_every_s, clock
        self.start = self.last_line = clock()
        self.done = 0
        self.label = ""

    def _rates(self, done: float) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        per_second = done / elapsed
        eta = (self.total - done) / per_second if per_second > 0 else float("inf")
        return (
            f"{per_second * self.voxels:,.0f} voxels/s, {per_second * 60:.2f} slices/min, "
            f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
            if eta != float("inf")
            else f"elapsed {format_duration(elapsed)}, ETA unknown"
        )

    def slice_done(self, label: str = "") -> None:
        """One more slice finished; `label` says which (e.g. 'z=12, member 1/2')."""
        self.done += 1
        self.last_line = self.clock()
        where = f" ({label})" if label else ""
        self.log.info(
            "slice %d/%d%s done: %s", self.done, self.total, where, self._rates(self.done)
        )

    def tile_done(self, done: int, total: int) -> None:
        if self.clock() - self.last_line < self.tile_every_s:
            return
        self.last_line = self.clock()
        where = f" ({self.label})" if self.label else ""
        self.log.info(
            "slice %d/%d%s, tile %d/%d: %s",
            self.done + 1,
            self.total,
            where,
            done,
            total,
            self._rates(self.done + done / total),
        )

    @contextmanager
    def tiles(self, label: str = "") -> Iterator[None]:
        """Log the engines' tiles of the slice being scored (label: which one)."""
        self.label = label
        token = _TILE_REPORTER.set(self.tile_done)
        try:
            yield
        finally:
            _TILE_REPORTER.reset(token)
