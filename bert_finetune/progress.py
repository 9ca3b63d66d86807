"""Progress lines with rate and ETA for long phases (feature writing, evaluation, prediction).

    progress = Progress("Writing train.tf_record", total=len(examples), unit="examples")
    for example in examples:
        ...
        progress.advance()
    progress.finish()

A phase that ends within `quiet_secs` logs nothing; a longer one logs a line every
`every_secs` (`done/total (pct), rate, ETA`) and a last line at `finish()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from absl import logging

T = TypeVar("T")


def hms(seconds: float) -> str:
    """`H:MM:SS` of a duration (negative counts as 0)."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts work done and logs `what: done/total (pct)  rate unit/s  ETA h:mm:ss`.

    `total` may be None (unknown): the line then has no percentage or ETA. `clock` is for
    tests (a fake monotonic clock).
    """

    def __init__(self, what: str, total: int | None, unit: str = "examples",
                 every_secs: float = 10.0, quiet_secs: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[..., None] = logging.info):
        self.what, self.total, self.unit = what, total, unit
        self.every_secs, self.quiet_secs = every_secs, quiet_secs
        self.done = 0
        self._clock, self._log = clock, log
        self._start = clock()
        self._next = self._start + max(quiet_secs, every_secs)
        self._logged = False

    def line(self) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done}"
        if self.total:
            text += f"/{self.total} ({100.0 * self.done / self.total:.0f}%)"
        text += f"  {rate:.1f} {self.unit}/s"
        if self.total and self.done < self.total:
            text += f"  ETA {hms((self.total - self.done) / max(rate, 1e-9))}"
        else:
            text += f"  elapsed {hms(elapsed)}"
        return text

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now >= self._next:
            self._log("%s", self.line())
            self._logged = True
            self._next = now + self.every_secs

    def finish(self) -> None:
        """Logs the final count and time if the phase was long enough to log at all."""
        if self._logged or self._clock() - self._start >= self.quiet_secs:
            self._log("%s", self.line())


def track(items: Iterable[T], what: str, total: int | None = None, **kwargs) -> Iterator[T]:
    """Yields `items`, advancing a `Progress` by one per item (total: len(items) if it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    progress = Progress(what, total, **kwargs)
    for item in items:
        yield item
        progress.advance()
    progress.finish()
