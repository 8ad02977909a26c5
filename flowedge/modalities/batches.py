"""Batches of preprocessed samples where a broken file is skipped, never fatal.

Training, evaluation, calibration, INT8 calibration and export checks all read
folders that may hold a truncated or corrupt file; each one wants to skip it,
say so by name, and go on with full batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from flowedge.core.errors import BadInputError

Item = TypeVar("Item")


def load_batches(
    items: Sequence[Item],
    load: Callable[[Item], np.ndarray | list[np.ndarray]],
    batch_size: int,
    on_skip: Callable[[Item, BadInputError], None],
    num_workers: int = 0,
    on_read: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[list[Item], np.ndarray]]:
    """Yield (items, stacked tensors) of ``batch_size`` usable items (the last may be short).

    An item whose ``load`` raises :class:`BadInputError` goes to ``on_skip`` and is left
    out. ``load`` may return a list: several samples of one item (a recording cut into
    windows), each kept with its item. ``num_workers`` > 0 loads in threads (OpenCV and
    file reads release the GIL). ``on_read(items, samples)`` hears, after each item, how
    many items were read (skipped ones too) and how many samples they gave (for progress).
    """
    pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None

    def attempt(item: Item) -> np.ndarray | list[np.ndarray] | BadInputError:
        try:
            return load(item)
        except BadInputError as exc:
            return exc

    kept: list[Item] = []
    tensors: list[np.ndarray] = []
    n_read = n_samples = 0
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            results = list(pool.map(attempt, chunk)) if pool else [attempt(i) for i in chunk]
            for item, result in zip(chunk, results, strict=True):
                if isinstance(result, BadInputError):
                    on_skip(item, result)
                    samples = []
                else:
                    samples = result if isinstance(result, list) else [result]
                n_read, n_samples = n_read + 1, n_samples + len(samples)
                if on_read is not None:
                    on_read(n_read, n_samples)
                for tensor in samples:
                    kept.append(item)
                    tensors.append(tensor)
                    if len(kept) == batch_size:
                        yield kept, np.stack(tensors)
                        kept, tensors = [], []
    finally:
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
    if kept:
        yield kept, np.stack(tensors)
