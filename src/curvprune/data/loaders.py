"""Batch loaders: a fast in-memory iterator and a `DataLoader` wrapper for image folders.

Both reshuffle every epoch from ``(seed, epoch)`` alone, so a run is reproducible and every
rank of a multi-process job computes the same permutation and takes a disjoint shard of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from curvprune.errors import InvalidArgument

# Independent random streams derived from the user's seed.
STREAM_SHUFFLE = 1
STREAM_AUGMENT = 2
STREAM_SCORING = 3
STREAM_SUBSET = 4


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. seed, stream, epoch), well mixed by `SeedSequence`."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def seeded_permutation(n: int, *keys: int) -> Tensor:
    """``torch.randperm(n)`` drawn from a generator seeded by ``derive_seed(*keys)``."""
    gen = torch.Generator().manual_seed(derive_seed(*keys))
    return torch.randperm(n, generator=gen)


def check_int(name: str, value: Any, minimum: int) -> int:
    """`value` if it is an integer ≥ `minimum` (numpy ints too, not bools); else an error."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BatchTransform:
    """Batched preprocessing of raw images: optional random crop and flip, scaling, normalization.

    ``out = (crop_flip(x) * scale - mean) / std`` per channel. The crop pads every side with
    ``crop_padding`` zeros (black, as torchvision's ``RandomCrop(padding=...)``) and cuts a window
    of the original size at an independent random offset per sample; the flip mirrors a random
    half of the samples horizontally.

    Args:
        mean: Per-channel mean of the scaled images.
        std: Per-channel standard deviation.
        scale: Factor that maps raw values to [0, 1] (1/255 for uint8 images).
        crop_padding: Padding in pixels for the random crop; 0 disables cropping.
        flip: Whether to flip a random half of each batch.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: float = 1 / 255,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = float(scale)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)

    @property
    def augments(self) -> bool:
        """True if the transform is random."""
        return self.crop_padding > 0 or self.flip

    def without_augmentation(self) -> BatchTransform:
        """The same scaling and normalization, with no random crop or flip."""
        return BatchTransform(
            self.mean.flatten().tolist(), self.std.flatten().tolist(), scale=self.scale
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Transform a batch.

        Args:
            x: Raw images, shape (B, C, H, W), any real dtype.
            generator: Source of randomness for crop and flip.

        Returns:
            float32 tensor of shape (B, C, H, W).
        """
        if self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_hflip(x, generator)
        return (x.to(torch.float32) * self.scale - self.mean) / self.std


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad a (B, C, H, W) batch by ``padding`` and cut an H x W window per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, None, :]
    return padded[
        torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
    ]


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample of a (B, C, H, W) batch left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


class _EpochOrder:
    """Per-epoch sample order shared by both loaders, with optional rank sharding.

    The full permutation of epoch ``e`` depends only on ``(seed, e)``; rank ``r`` of ``w`` takes
    positions ``r, r + w, r + 2w, ...`` of its first ``w * (n // w)`` entries, so the shards are
    disjoint, equally long and, when ``w`` divides ``n``, cover the dataset (otherwise up to
    ``w - 1`` samples, different ones each epoch, are left out).
    """

    def _init_order(
        self,
        n: int,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int,
        world_size: int,
    ) -> None:
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.world_size = check_int("world_size", world_size, 1)
        self.rank = check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise InvalidArgument(f"rank must be in 0..{self.world_size - 1}, got {rank}")
        self.num_examples = n
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use epoch ``epoch``'s order (iterating advances it by one)."""
        self.epoch = check_int("epoch", epoch, 0)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return self.num_examples // self.world_size

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch_indices(self, epoch: int | None = None) -> Tensor:
        """This rank's sample indices, in order, for ``epoch`` (default: the next one).

        Rank ``r`` of ``w`` takes positions ``r, r + w, ...`` of the first ``w * (n // w)``
        entries of the epoch's permutation (seeded by ``(seed, epoch)`` only).
        """
        epoch = self.epoch if epoch is None else epoch
        n = self.num_examples
        if self.shuffle:
            order = seeded_permutation(n, self.seed, STREAM_SHUFFLE, epoch)
        else:
            order = torch.arange(n)
        usable = self.num_samples * self.world_size
        indices = order[self.rank : usable : self.world_size]
        if self.drop_last:
            indices = indices[: len(self) * self.batch_size]
        return indices

    def _next_epoch(self) -> int:
        epoch = self.epoch
        self.epoch += 1
        return epoch


class TensorLoader(_EpochOrder):
    """Re-iterable batches ``(inputs, targets)`` from tensors held in memory.

    Much faster than a per-sample `DataLoader`: a batch is one index-gather plus one batched
    transform. Each iteration uses the current epoch and then advances it, so iterating again
    reshuffles; `set_epoch` jumps to a given epoch. Randomness (order and augmentation) depends
    only on ``(seed, epoch, rank)``.

    Args:
        inputs: Raw images, shape (N, C, H, W), e.g. uint8.
        targets: Labels, shape (N,), int64.
        batch_size: Samples per batch.
        transform: Batched transform ``(x, generator) -> x``, e.g. `BatchTransform`; ``None``
            yields ``inputs`` unchanged.
        shuffle: Reshuffle every epoch; otherwise keep the stored order.
        seed: Seed for shuffling and augmentation.
        drop_last: Drop the last incomplete batch.
        rank: This process's index for multi-process training: each rank gets a disjoint,
            equal-size shard of every epoch's permutation (see `epoch_indices`).
        world_size: Number of processes; 1 (default) means no sharding.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        *,
        batch_size: int,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise InvalidArgument(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets")
        self.inputs = inputs
        self.targets = targets
        self.transform = transform
        self._init_order(
            inputs.shape[0],
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self._next_epoch()
        indices = self.epoch_indices(epoch)
        gen = torch.Generator().manual_seed(
            derive_seed(self.seed, STREAM_AUGMENT, epoch, self.rank)
        )
        for start in range(0, len(indices), self.batch_size):
            idx = indices[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self.inputs[idx]
            if self.transform is not None:
                x = self.transform(x, gen)
            yield x, self.targets[idx]

    def eval_shard(self, rank: int, world_size: int) -> TensorLoader:
        """Samples ``rank, rank + K, ...`` in stored order: an exact partition of the data."""
        return TensorLoader(
            self.inputs[rank::world_size],
            self.targets[rank::world_size],
            batch_size=self.batch_size,
            transform=self.transform,
        )


class SeededSampleDataset(Dataset):
    """A map-style dataset of ``(path, label)`` image files with a per-sample seeded transform.

    Indexing with ``(index, base_seed)`` runs the transform under torch's RNG seeded with
    ``base_seed + index``, so augmentation is reproducible whatever ``num_workers`` is; a plain
    ``index`` uses the ambient RNG.

    Args:
        samples: ``(path, class index)`` pairs.
        transform: Maps a PIL RGB image to a tensor.
        loader: Opens a path as a PIL RGB image.
    """

    def __init__(
        self, samples: list[tuple[Any, int]], transform: Callable, loader: Callable
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        index, base_seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        image = self.loader(path)
        if base_seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((base_seed + index) % 2**63)
            return self.transform(image), label


class _EpochKeys:
    """A sampler whose keys the loader replaces each epoch (workers stay alive meanwhile)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class StreamLoader(_EpochOrder):
    """Re-iterable batches from a `SeededSampleDataset` through a `torch.utils.data.DataLoader`.

    Same epoch, shuffling and sharding rules as `TensorLoader`; images are decoded and augmented
    in ``num_workers`` worker processes, started once and kept across epochs (one
    `DataLoader` with persistent workers whose sampler is given each epoch's keys), with pinned
    memory when CUDA is available. The DataLoader draws its worker seeds from its own
    generator, not torch's global one, so the number of workers and when they start change
    neither the augmentation (seeded per sample) nor the global random stream.

    Args:
        dataset: The samples and their transform.
        batch_size: Samples per batch.
        shuffle: Reshuffle every epoch.
        seed: Seed for shuffling and augmentation.
        num_workers: DataLoader worker processes (0 decodes in the calling process).
        drop_last: Drop the last incomplete batch.
        rank: This process's index for multi-process training.
        world_size: Number of processes.
    """

    def __init__(
        self,
        dataset: SeededSampleDataset,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.num_workers = check_int("num_workers", num_workers, 0)
        self._keys = _EpochKeys()
        self._loader: DataLoader | None = None
        self._init_order(
            len(dataset),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self._next_epoch()
        base = derive_seed(self.seed, STREAM_AUGMENT, epoch, self.rank)
        self._keys.keys = [(int(i), base) for i in self.epoch_indices(epoch)]
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self._keys,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                drop_last=self.drop_last,
                pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(self.seed % 2**63),
            )
        yield from self._loader

    def eval_shard(self, rank: int, world_size: int) -> StreamLoader:
        """Samples ``rank, rank + K, ...`` in stored order: an exact partition of the data."""
        ds = self.dataset
        subset = SeededSampleDataset(ds.samples[rank::world_size], ds.transform, ds.loader)
        return StreamLoader(subset, batch_size=self.batch_size, num_workers=self.num_workers)
