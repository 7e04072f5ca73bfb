"""Mini-batches straight from in-memory tensors: the fast path for the book's small data sets."""

from __future__ import annotations

from typing import Callable, Iterator

import torch


class TensorLoader:
    """Iterate ``(x, y)`` mini-batches of in-memory tensors, reshuffled each epoch from ``seed``.

    ``transform`` maps a whole float batch to an augmented batch. Much faster than a ``DataLoader`` over a
    ``TensorDataset`` because it slices batches instead of collating single items.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} items but y has {len(y)}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.transform, self.drop_last = shuffle, seed, transform, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.y), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(len(self.y))
        self.epoch += 1
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[index]
            yield (self.transform(x) if self.transform is not None else x), self.y[index]
