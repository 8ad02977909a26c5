"""Progress of a long loop: a bar on a terminal, a few log lines everywhere else.

A tqdm bar redrawn into a log file or CI output becomes one giant line nobody
can read, so off a terminal (or with ``--no-progress``) the same loop logs a
line at every tenth of the work or every 30 s, whichever comes first. Standard
library only (tqdm is imported when a bar is drawn), so the station's
calibration can use it without the training stack.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

log = logging.getLogger("flowedge.progress")


class Progress:
    """Count work done towards ``total`` units; use as a context manager.

    ``bar``: draw a tqdm bar when the output is a terminal (a wish, not an
    order: without a terminal or tqdm it logs instead). ``status`` values given
    to :meth:`update` (e.g. the loss) appear on the bar and in the log lines.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        *,
        bar: bool = True,
        every_fraction: float = 0.1,
        every_s: float = 30.0,
        stream: TextIO | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.status: dict[str, Any] = {}
        self._every_fraction = every_fraction
        self._every_s = every_s
        self._log = logger
        self._start = self._last_time = time.monotonic()
        self._last_n = 0
        self._bar = _tqdm_bar(total, desc, unit, stream or sys.stderr) if bar else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(finished=exc_type is None)

    def update(self, n: int = 1, **status: Any) -> None:
        self.n += n
        self.status.update(status)
        if self._bar is not None:
            if status:
                self._bar.set_postfix(status, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        step = max(1, round(self.total * self._every_fraction)) if self.total else None
        if (step and self.n - self._last_n >= step) or now - self._last_time >= self._every_s:
            self._log_line(now)

    def advance_to(self, done: int, **status: Any) -> None:
        """Set the count to ``done`` (for loops that know their position, not their step)."""
        self.update(done - self.n, **status)

    def files_read(self, files: int, samples: int) -> None:
        """For a loop over files that may each give several samples (a recording cut into
        windows, a log into cycles): the count is in files, whose total is known; the status
        says how many samples they gave."""
        self.advance_to(files, samples=samples)

    def close(self, finished: bool = True) -> None:
        """A loop that finished early (a closed-form fit in one pass) is complete at its count."""
        if self._bar is not None:
            if finished:
                self._bar.total = self.n
            self._bar.close()
            return
        if self.n != self._last_n or self.n == 0:
            self._log_line(time.monotonic())

    def _log_line(self, now: float) -> None:
        self._last_n, self._last_time = self.n, now
        of = f"/{self.total}" if self.total else ""
        percent = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.status.items())
        self._log.info(
            "%s: %d%s %s%s, %.1f s%s",
            self.desc,
            self.n,
            of,
            self.unit,
            percent,
            now - self._start,
            extra,
        )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _tqdm_bar(total: int, desc: str, unit: str, stream: TextIO) -> Any:
    """A tqdm bar when ``stream`` is a terminal and tqdm is installed, else None (log lines)."""
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
