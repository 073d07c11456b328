"""An endless, seeded stream of training batches; a resumed run skips the batches it already used, so an
interrupted and resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .images import UInt8ImageDataset, check_positive_int, check_seed, is_int, uint8_to_unit_range


def infinite_batches(dataset: Dataset, batch_size: int, seed: int, device="cpu", start: int = 0) -> Iterator[Tensor]:
    """An endless stream of data batches ``(batch_size, *sample_shape)`` on ``device``, labels dropped.

    ``start`` skips the first ``start`` batches of the stream (a resumed run continues the stream of the
    interrupted one); in-memory datasets skip without materialising them.

    Each epoch visits the samples in a fresh random order drawn from one ``torch.Generator`` seeded
    with ``seed``, and drops the last incomplete batch: within an epoch every sample appears at most
    once (exactly once when ``batch_size`` divides ``len(dataset)``), and the same seed gives the
    same stream.

    In-memory datasets (:class:`TensorDataset`, :class:`UInt8ImageDataset`) are moved to ``device``
    once and indexed there a batch at a time; any other map-style dataset goes through a
    :class:`DataLoader` (single process) that shuffles with the same generator.

    Raises
    ------
    ValueError
        ``batch_size`` not a positive integer or larger than the dataset, or a non-integer seed.
    """
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    if not is_int(start) or start < 0:
        raise ValueError(f"start={start!r} is not allowed: use a number of batches >= 0")
    if batch_size > len(dataset):
        raise ValueError(
            f"batch_size={batch_size} is not allowed: the dataset holds only {len(dataset)} samples "
            "(use batch_size <= len(dataset))"
        )
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    if isinstance(dataset, TensorDataset):
        return _indexed_batches(dataset.tensors[0].to(device), None, batch_size, generator, start)
    if isinstance(dataset, UInt8ImageDataset):
        return _indexed_batches(dataset.images.to(device), uint8_to_unit_range, batch_size, generator, start)
    return itertools.islice(_loader_batches(dataset, batch_size, generator, device), start, None)


def _indexed_batches(stored: Tensor, decode, batch_size: int, generator: torch.Generator,
                     start: int) -> Iterator[Tensor]:
    n = stored.shape[0]
    per_epoch = n // batch_size
    skipped_epochs, first = divmod(start, per_epoch)
    for _ in range(skipped_epochs):
        torch.randperm(n, generator=generator)  # advance the generator exactly as those epochs did
    while True:
        # the permutation is drawn on the CPU generator, so the stream is the same on every device
        order = torch.randperm(n, generator=generator).to(stored.device)
        for index in range(first, per_epoch):
            batch = stored[order[index * batch_size : (index + 1) * batch_size]]
            yield batch if decode is None else decode(batch)
        first = 0


def _loader_batches(dataset: Dataset, batch_size: int, generator: torch.Generator, device) -> Iterator[Tensor]:
    # each iter() over the loader draws a new permutation from `generator`: one reshuffle per epoch
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    while True:
        for batch in loader:
            data = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield data.to(device)
