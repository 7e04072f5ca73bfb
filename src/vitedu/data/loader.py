"""Mini-batches that can restart anywhere: the same batches, the same augmentations, after an interruption.

Two loaders share one protocol, which the training engine relies on to resume a run mid-epoch exactly:
``len(loader)`` batches per epoch, ``loader.set_epoch(epoch)`` fixes the epoch's order, and
``loader.iter_from(step)`` yields that epoch's batches from ``step`` on without computing the earlier ones.

- ``TensorLoader`` slices in-memory float tensors (fast path for the book's small data sets; an optional ``transform``
  maps a whole batch, e.g. on the GPU).
- ``Loader`` wraps a ``torch.utils.data.DataLoader`` over any map-style dataset with per-image transforms (PIL
  augmentations, ImageFolder). Each sample gets its own seed from (seed, epoch, position), so its augmentation does not
  depend on the worker that draws it, on the number of workers, or on where the run was resumed.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True, repeats: int = 1, num_replicas: int = 1,
                rank: int = 0) -> torch.Tensor:
    """The indices one process visits in an epoch.

    ``repeats > 1`` is repeated augmentation (DeiT's RASampler, Hoffer et al. 2020): each index appears ``repeats``
    times in a row, the copies go to different processes or neighbouring positions, and the epoch is cut back to
    about ``n`` samples per epoch in all, so an epoch sees about n / repeats distinct images, each augmented
    ``repeats`` times.
    """
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    if repeats > 1:
        order = order.repeat_interleave(repeats)
    per_replica = math.ceil(n / num_replicas)
    total = per_replica * num_replicas
    if len(order) < total:  # pad so that every process gets the same number of samples
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank::num_replicas][:per_replica]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """One 63-bit seed per (run seed, epoch, position in the epoch): the sample's augmentation depends on nothing else."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class _ResumableSampler(Sampler):
    """Yields ``(index, seed)`` pairs of one epoch from a given position."""

    def __init__(self, n: int, seed: int, shuffle: bool, repeats: int, num_replicas: int, rank: int):
        self.n, self.seed, self.shuffle, self.repeats = n, seed, shuffle, repeats
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas) - self.start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle, self.repeats, self.num_replicas, self.rank)
        for position in range(self.start, len(order)):
            global_position = position * self.num_replicas + self.rank
            yield int(order[position]), sample_seed(self.seed, self.epoch, global_position)


class _Seeded(Dataset):
    """Loads item ``index`` with torch, numpy and python RNGs seeded from the sample's own seed, then puts the
    caller's RNG states back (with ``num_workers=0`` the loading runs in the training process)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])


class Loader:
    """Batches of a map-style ``dataset`` (its ``__getitem__`` returns ``(image, label)``), resumable mid-epoch.

    ``repeats``: repeated augmentation (see ``epoch_order``). ``num_replicas``/``rank``: this process's share under
    torchrun (``vitedu.train.distributed`` fills them in). ``drop_last`` drops a last incomplete batch (Mixup needs
    even batches). Worker processes, if any, are kept alive between epochs.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
                 drop_last: bool = False, repeats: int = 1, num_replicas: int = 1, rank: int = 0,
                 pin_memory: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if len(dataset) == 0:
            raise ValueError("the data set is empty.")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler = _ResumableSampler(len(dataset), seed, shuffle, repeats, num_replicas, rank)
        self.loader = DataLoader(_Seeded(dataset), batch_size=batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=num_workers, persistent_workers=False, pin_memory=pin_memory,
                                 generator=torch.Generator())  # its own generator: the global RNG stays untouched
        self._started = False

    def __len__(self) -> int:
        full, rest = divmod(math.ceil(len(self.dataset) / self.sampler.num_replicas), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.start = step * self.batch_size
        try:
            yield from self.loader
        finally:
            self.sampler.start = 0

    def __iter__(self):
        """A plain pass over the current epoch; then the next epoch (as a DataLoader with set_epoch would)."""
        yield from self.iter_from(0)
        self.sampler.epoch += 1


class TensorLoader:
    """Iterate ``(x, y)`` mini-batches of in-memory tensors, reshuffled each epoch from ``seed``.

    ``transform`` maps a whole float batch to an augmented batch (drawing from the global RNG, which the engine
    checkpoints). Much faster than a ``DataLoader`` over a ``TensorDataset``: it slices batches instead of collating
    single items.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} items but y has {len(y)}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        if len(y) == 0:
            raise ValueError("the data set is empty.")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.transform, self.drop_last = shuffle, seed, transform, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(math.ceil(len(self.y) / self.num_replicas), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def iter_from(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.y), self.seed, self.epoch, self.shuffle, 1, self.num_replicas, self.rank)
        for i in range(step, len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[index]
            yield (self.transform(x) if self.transform is not None else x), self.y[index]

    def __iter__(self):
        yield from self.iter_from(0)
        self.epoch += 1
