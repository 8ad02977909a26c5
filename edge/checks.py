"""What ``flowedge check`` prints per item: one result with what to do, and its exit code.

Each source kind and each sink kind brings its own check (edge/sources, edge/sinks);
this module is the shape they share and the one way to try a source's first sample.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flowedge.core.errors import EXIT_CHECK, EXIT_OK


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    exit_code: int = EXIT_OK

    def line(self) -> str:
        return f"{'OK' if self.ok else 'FAIL':<4}  {self.name:<20} {self.detail}"


def passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, True, detail)


def failed(name: str, detail: str, exit_code: int = EXIT_CHECK) -> CheckResult:
    return CheckResult(name, False, detail, exit_code)


def first_sample(
    frames: Callable[[Callable[..., None], threading.Event], Iterator[Any]],
    name: str,
    timeout_s: float,
) -> tuple[str | None, str]:
    """The first frame of a real source, read on a helper thread.

    ``frames(record_event, stop)`` opens the source and iterates its frames. Returns the
    first frame's description, or None and the source's own last event (camera lost,
    folder empty) or a timeout message.
    """
    stop = threading.Event()
    got: list[str] = []
    events: list[str] = []
    done = threading.Event()

    def record(_source: str | None, _kind: str, message: str, **_details: Any) -> None:
        events.append(message)

    def read() -> None:
        try:
            for frame in frames(record, stop):
                shape = getattr(frame.payload, "shape", None)
                got.append(
                    f"{frame.part_id!r}" + (f" ({'x'.join(map(str, shape))})" if shape else "")
                )
                break
        except Exception as exc:  # the source's own failure is the check's answer
            events.append(str(exc))
        finally:
            done.set()

    threading.Thread(target=read, name=f"check-{name}", daemon=True).start()
    done.wait(timeout_s)
    stop.set()
    if got:
        return got[0], ""
    if events:
        return None, events[-1]
    return None, f"no sample within {timeout_s:g} s (check the uri, cabling and --timeout)"
