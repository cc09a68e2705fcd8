"""Loading for the sweep: planned batches, decoded in worker processes while the main
process scores (``workers > 0``), or in the main process itself (``workers = 0``).

A *plan* is a list of ``(dataset index, start, stop)`` sample ranges, one per batch, in the
order they are scored. The sweep cuts every chunk it must score into batches of
``batch_size`` (:func:`batch_ranges`), so no batch crosses a chunk boundary, and one
:class:`BatchLoader` serves every chunk of an evaluation: worker processes start once, not
once per chunk. Batches arrive in plan order with the same contents whatever the number of
workers (``DataLoader`` keeps its order), so the scores never depend on it. With workers on
CUDA, batches are pinned (page-locked) so the copy to the GPU can be ``non_blocking``, and
each worker keeps ``PREFETCH_BATCHES`` batches ready ahead of the scoring loop.

Errors. A :class:`~gaia_viz.errors.GaiaVizError` or ``OSError`` raised while loading (a file
that passed the header check but does not decode) is *returned* from the worker as a
:class:`LoadFailure` and raised again in the main process as the same exception. Raised in
the worker, torch would re-create it in the main process with the worker's whole traceback as
its message ("Caught ImageLoadError in DataLoader worker process 0. Original Traceback
..."), and the user would lose the one line that says what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

from gaia_viz.errors import GaiaVizError

PREFETCH_BATCHES = 2  # per worker, ahead of the scoring loop (DataLoader's prefetch_factor)

Plan = Sequence[tuple[int, int, int]]  # (dataset index, start, stop) per batch


def batch_ranges(start: int, end: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` cutting samples ``[start, end)`` into batches of ``batch_size``."""
    return [(s, min(end, s + batch_size)) for s in range(start, end, batch_size)]


@dataclass
class LoadedBatch:
    """Samples ``[start, stop)`` of dataset ``dataset`` (its index in the plan's list):
    ``images [B, C, H, W]``, ``labels [B]`` (int64, -1 where unknown), and the ``seconds``
    the loading process spent decoding and transforming them."""

    dataset: int
    start: int
    stop: int
    images: Tensor
    labels: Tensor
    seconds: float

    def pin_memory(self) -> "LoadedBatch":
        """The batch in page-locked memory (DataLoader's pin thread calls this)."""
        return LoadedBatch(self.dataset, self.start, self.stop, self.images.pin_memory(),
                           self.labels.pin_memory(), self.seconds)


@dataclass
class LoadFailure:
    """A user error met while loading a batch, carried to the main process as a value."""

    error: BaseException


class PlannedBatches(torch.utils.data.Dataset):
    """Item ``k`` is the plan's batch ``k``, loaded: a :class:`LoadedBatch`, or a
    :class:`LoadFailure` for a GaiaVizError / OSError of the dataset."""

    def __init__(self, datasets: Sequence, plan: Plan):
        self.datasets = list(datasets)
        self.plan = [tuple(int(v) for v in item) for item in plan]

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> LoadedBatch | LoadFailure:
        index, start, stop = self.plan[k]
        dataset = self.datasets[index]
        began = time.perf_counter()
        try:
            items = [dataset[i] for i in range(start, stop)]
        except (GaiaVizError, OSError) as exc:
            return LoadFailure(exc)
        images = torch.stack([item[0] for item in items])
        labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
        return LoadedBatch(index, start, stop, images, labels, time.perf_counter() - began)


def keep_batch(item):
    """The loader's collate function: a planned item is already a whole batch."""
    return item


class BatchLoader:
    """Iterates the plan's batches in order (raising a dataset's own error where one failed)
    and counts what loading cost: ``images``, ``load_seconds`` (decode + transform time,
    summed over the loading processes) and ``wait_seconds`` (time the consumer sat waiting
    for the next batch: when that is a large share of the run, loading limits it)."""

    def __init__(self, datasets: Sequence, plan: Plan, workers: int = 0, pin_memory: bool = False):
        self.source = PlannedBatches(datasets, plan)
        self.workers = max(0, min(int(workers), len(self.source)))  # no worker without a batch
        self.pin_memory = bool(pin_memory) and self.workers > 0
        self.images = 0
        self.load_seconds = 0.0
        self.wait_seconds = 0.0

    @property
    def processes(self) -> int:
        """Processes that decode: the workers, or the main process when there are none."""
        return max(1, self.workers)

    def load_rate(self) -> float | None:
        """Images/s the loading processes deliver together (None before any batch)."""
        if not self.images or self.load_seconds <= 0:
            return None
        return self.images / self.load_seconds * self.processes

    def _items(self) -> Iterator:
        if self.workers == 0:
            return (self.source[k] for k in range(len(self.source)))
        loader = torch.utils.data.DataLoader(
            self.source, batch_size=None, shuffle=False, num_workers=self.workers,
            collate_fn=keep_batch, pin_memory=self.pin_memory, prefetch_factor=PREFETCH_BATCHES,
        )
        return iter(loader)

    def __iter__(self) -> Iterator[LoadedBatch]:
        items = self._items()
        try:
            while True:
                began = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                self.wait_seconds += time.perf_counter() - began
                if isinstance(item, LoadFailure):
                    raise item.error
                self.images += len(item.labels)
                self.load_seconds += item.seconds
                yield item
        finally:
            del items  # a DataLoader iterator shuts its workers down when released


__all__ = ["PREFETCH_BATCHES", "BatchLoader", "LoadFailure", "LoadedBatch", "PlannedBatches",
           "batch_ranges", "keep_batch"]
