"""`load_data`: a dataset name to train/test loaders and scoring batches."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from curvprune.data import files, folders, formats
from curvprune.data.loaders import (
    STREAM_SCORING,
    STREAM_SUBSET,
    BatchTransform,
    SeededSampleDataset,
    StreamLoader,
    TensorLoader,
    check_int,
    seeded_permutation,
)
from curvprune.data.registry import DATASETS, DatasetInfo
from curvprune.errors import DataError, InvalidArgument

# The digits split is fixed (not the run's seed) so test accuracies stay comparable across runs.
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
#: The validation split is fixed (not the run's seed), like the PaI papers' random_state 42.
VAL_SPLIT_SEED = 42

Fetch = Callable[[Tensor], tuple[Tensor, Tensor]]


class DataBundle:
    """Everything a training or pruning run needs from a dataset.

    Attributes:
        info: The registry entry (for folder datasets ``num_classes`` is the number of class
            folders actually found).
        train: Shuffled, augmented training batches; re-iterable, ``len()`` is batches per epoch,
            ``set_epoch(e)`` fixes the next epoch's order.
        test: Test batches in stored order, no augmentation.
        val: Validation batches (held out of the training set, no augmentation), or None.
        num_train: Training samples (after ``train_limit``).
        num_test: Test samples.
        num_val: Validation samples (0 without a validation split).
        seed: The seed everything random was derived from.
    """

    def __init__(
        self,
        info: DatasetInfo,
        train: TensorLoader | StreamLoader,
        test: TensorLoader | StreamLoader,
        *,
        seed: int,
        fetch_train: Fetch,
        train_labels: Tensor,
        val: TensorLoader | StreamLoader | None = None,
    ) -> None:
        self.info = info
        self.train = train
        self.test = test
        self.num_train = train.num_examples
        self.num_test = test.num_examples
        self.val = val
        self.num_val = 0 if val is None else val.num_examples
        self.seed = seed
        self._fetch_train = fetch_train
        self._train_labels = train_labels

    def scoring_batches(
        self,
        num_samples: int | None,
        batch_size: int,
        *,
        per_class: int | None = None,
        draw: int = 0,
    ) -> list[tuple[Tensor, Tensor]]:
        """Fixed training batches for computing pruning scores.

        The first ``num_samples`` samples of a permutation of the training set seeded by
        ``seed`` alone (not the epoch), normalized but not augmented, so two calls with the
        same seed return identical tensors. With ``per_class`` instead, the first
        ``per_class`` samples of each class in that permutation (the HTS paper scores on 10
        images per class), in permutation order.

        Args:
            num_samples: Samples in total, 1..num_train (None with ``per_class``).
            batch_size: Samples per batch; the last batch may be smaller.
            per_class: Samples of each class; a class with fewer gives all it has.
            draw: Which seeded subset: 0 is the one above; 1, 2, ... are further, independent
                draws (gradual pruning scores a fresh subset at each step, as WoodFisher's code).

        Returns:
            A list of ``(inputs, targets)`` pairs.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        keys = (STREAM_SCORING,) if draw == 0 else (STREAM_SCORING, check_int("draw", draw, 0))
        order = seeded_permutation(self.num_train, self.seed, *keys)
        if per_class is not None:
            per_class = check_int("per_class", per_class, 1)
            order = order[self._rank_in_class(order) < per_class]
            num_samples = len(order)
        num_samples = check_int("num_samples", num_samples, 1)
        if num_samples > self.num_train:
            raise InvalidArgument(
                f"num_samples={num_samples} exceeds the {self.num_train} training samples "
                f"of {self.info.name!r}"
            )
        order = order[:num_samples]
        return [
            self._fetch_train(order[i : i + batch_size]) for i in range(0, num_samples, batch_size)
        ]

    def _rank_in_class(self, order: Tensor) -> Tensor:
        """For each index of `order`: how many earlier entries of `order` share its class."""
        labels = self._train_labels[order]
        rank = torch.empty_like(labels)
        for c in labels.unique():
            where = labels == c
            rank[where] = torch.arange(int(where.sum()))
        return rank

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.info.name!r}, num_train={self.num_train}, num_test={self.num_test}, "
            f"train_batches={len(self.train)}, test_batches={len(self.test)})"
        )


def resolve_name(name: str) -> str:
    """Canonical dataset name (case and ``_`` vs ``-`` ignored) or `InvalidArgument`."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise InvalidArgument(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def load_data(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    seed: int = 0,
    augment: bool = True,
    num_workers: int = 0,
    download: bool = False,
    train_limit: int | None = None,
    val_split: float = 0.0,
    rank: int = 0,
    world_size: int = 1,
) -> DataBundle:
    """Load a dataset by name.

    Files are looked up in ``data_dir`` (the dataset folder or a parent holding ``<name>/``),
    then ``$CURVPRUNE_DATA/<name>``, then ``~/.cache/curvprune/<name>`` (and system copies such
    as ``/usr/share/datasets/fashion-mnist``). ``digits`` needs no files.

    Args:
        name: A key of `DATASETS`.
        data_dir: Folder searched first.
        batch_size: Training batch size.
        eval_batch_size: Test batch size (default: ``batch_size``).
        seed: Seed for shuffling, augmentation, ``train_limit`` and scoring batches.
        augment: Apply the dataset's standard training augmentation.
        num_workers: Worker processes for streamed datasets (ignored for in-memory ones).
        download: Let torchvision download missing files (MNIST, Fashion-MNIST, CIFAR) into
            ``data_dir`` or ``~/.cache/curvprune/<name>``.
        train_limit: Keep only this many training samples (a seeded random subset of what
            the validation split leaves).
        val_split: Hold out this fraction of each class of the training set as ``val``
            (stratified, the same split for every ``seed``: seeded by `VAL_SPLIT_SEED`, as the
            PaI papers' fixed 80/20 split); 0 for none.
        rank: This process's index; each rank's ``train`` sees a disjoint shard per epoch.
        world_size: Number of processes (default 1: no sharding).

    Returns:
        A `DataBundle`.

    Raises:
        InvalidArgument: Unknown name or a bad number.
        DataError: Files missing or corrupt; the message says where it looked.
    """
    key = resolve_name(name)
    info = DATASETS[key]
    batch_size = check_int("batch_size", batch_size, 1)
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    eval_batch_size = check_int("eval_batch_size", eval_batch_size, 1)
    seed = check_int("seed", seed, 0)
    num_workers = check_int("num_workers", num_workers, 0)
    if train_limit is not None:
        train_limit = check_int("train_limit", train_limit, 1)
    world_size = check_int("world_size", world_size, 1)
    if check_int("rank", rank, 0) >= world_size:
        raise InvalidArgument(f"rank must be in 0..{world_size - 1}, got {rank}")
    ok = isinstance(val_split, (int, float)) and not isinstance(val_split, bool)
    if not ok or not 0 <= val_split < 1:
        raise InvalidArgument(f"val_split must be a fraction in [0, 1), got {val_split!r}")
    common = dict(seed=seed, rank=rank, world_size=world_size)

    if info.in_memory:
        x_train, y_train, x_test, y_test, scale = _load_arrays(key, data_dir, download)
        held = _stratified_holdout(y_train, val_split)
        if len(held):
            x_val, y_val = x_train[held], y_train[held]
            rest = _complement(held, len(y_train))
            x_train, y_train = x_train[rest], y_train[rest]
        if train_limit is not None and train_limit < len(y_train):
            keep = seeded_permutation(len(y_train), seed, STREAM_SUBSET)[:train_limit]
            keep = keep.sort().values
            x_train, y_train = x_train[keep], y_train[keep]
        plain = BatchTransform(info.mean, info.std, scale=scale)
        augmented = _tensor_augmentation(key, info, scale) if augment else plain
        train = TensorLoader(
            x_train, y_train, batch_size=batch_size, transform=augmented, shuffle=True, **common
        )
        test = TensorLoader(x_test, y_test, batch_size=eval_batch_size, transform=plain)
        val = None
        if len(held):
            val = TensorLoader(x_val, y_val, batch_size=eval_batch_size, transform=plain)

        def fetch(idx: Tensor) -> tuple[Tensor, Tensor]:
            return plain(x_train[idx]), y_train[idx]

        labels = y_train.long()
        return DataBundle(
            info, train, test, seed=seed, fetch_train=fetch, train_labels=labels, val=val
        )

    lister = folders.list_tinyimagenet if key == "tinyimagenet" else folders.list_imagenet
    try:
        found = files.find_files(key, data_dir)
    except DataError as err:
        if download:
            raise DataError(f"{err} ({key} cannot be downloaded automatically)") from None
        raise
    classes, train_samples, test_samples = lister(found.root)
    info = dataclasses.replace(info, num_classes=len(classes))
    held = _stratified_holdout(torch.tensor([y for _, y in train_samples]), val_split)
    val_samples = [train_samples[i] for i in held.tolist()]
    train_samples = [train_samples[i] for i in _complement(held, len(train_samples)).tolist()]
    if train_limit is not None and train_limit < len(train_samples):
        keep = seeded_permutation(len(train_samples), seed, STREAM_SUBSET)[:train_limit]
        train_samples = [train_samples[i] for i in sorted(keep.tolist())]
    train_tf, test_tf = folders.image_transforms(key, info, augment=augment)
    train_set = SeededSampleDataset(train_samples, train_tf, folders.open_rgb)
    scoring_set = SeededSampleDataset(train_samples, test_tf, folders.open_rgb)
    test_set = SeededSampleDataset(test_samples, test_tf, folders.open_rgb)
    train = StreamLoader(
        train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers, **common
    )
    test = StreamLoader(test_set, batch_size=eval_batch_size, num_workers=num_workers)
    val = None
    if val_samples:
        val_set = SeededSampleDataset(val_samples, test_tf, folders.open_rgb)
        val = StreamLoader(val_set, batch_size=eval_batch_size, num_workers=num_workers)

    def fetch_stream(idx: Tensor) -> tuple[Tensor, Tensor]:
        items = [scoring_set[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])

    labels = torch.tensor([y for _, y in train_samples], dtype=torch.long)
    return DataBundle(
        info, train, test, seed=seed, fetch_train=fetch_stream, train_labels=labels, val=val
    )


def _stratified_holdout(labels: Tensor, fraction: float) -> Tensor:
    """Sorted indices of round(fraction · n_c) samples of each class c, seeded by VAL_SPLIT_SEED."""
    if fraction == 0:
        return torch.zeros(0, dtype=torch.long)
    order = seeded_permutation(len(labels), VAL_SPLIT_SEED, STREAM_SUBSET)
    ordered = labels[order]
    held = []
    for c in ordered.unique():
        members = order[ordered == c]
        held.append(members[: round(fraction * len(members))])
    return torch.cat(held).sort().values


def _complement(indices: Tensor, n: int) -> Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[indices] = False
    return keep.nonzero().flatten()


def _tensor_augmentation(key: str, info: DatasetInfo, scale: float) -> BatchTransform:
    if key in ("cifar10", "cifar100"):
        return BatchTransform(info.mean, info.std, scale=scale, crop_padding=4, flip=True)
    # Digits, MNIST and Fashion-MNIST are trained without augmentation by convention.
    return BatchTransform(info.mean, info.std, scale=scale)


def _load_arrays(
    key: str, data_dir: str | os.PathLike | None, download: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """Raw uint8 images (N, C, H, W), int64 labels, and the factor mapping pixels to [0, 1]."""
    if key == "digits":
        return (*_digits(), 1 / 16)
    try:
        found = files.find_files(key, data_dir)
    except DataError:
        if not download:
            raise
        _download(key, data_dir)
        found = files.find_files(key, data_dir)
    num_classes = DATASETS[key].num_classes
    if key in ("mnist", "fashion-mnist"):
        parts = []
        for split in ("train", "t10k"):
            x, y = formats.read_idx_pair(
                found.files[f"{split}-images-idx3-ubyte"],
                found.files[f"{split}-labels-idx1-ubyte"],
                num_classes=num_classes,
            )
            parts += [torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))]
        return (*parts, 1 / 255)
    label_key = "labels" if key == "cifar10" else "fine_labels"
    train_names = files.REQUIRED[key][:-1]
    batches = [
        formats.read_cifar_batch(found.files[n], label_key=label_key, num_classes=num_classes)
        for n in train_names
    ]
    x_test, y_test = formats.read_cifar_batch(
        found.files[files.REQUIRED[key][-1]], label_key=label_key, num_classes=num_classes
    )
    x_train = np.concatenate([x for x, _ in batches])
    y_train = np.concatenate([y for _, y in batches])
    return (
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        1 / 255,
    )


def _digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The digits split shipped in ``digits.npz`` (see ``DIGITS_NOTICE.md`` next to it).

    It is scikit-learn's ``load_digits`` split by ``train_test_split(test_size=DIGITS_TEST_SIZE,
    stratify=y, random_state=DIGITS_SPLIT_SEED)``, pixel values 0..16 as uint8.
    """
    from importlib.resources import files as package_files

    with package_files("curvprune.data").joinpath("digits.npz").open("rb") as f, np.load(f) as z:
        arrays = (z["x_train"], z["y_train"].astype(np.int64), z["x_test"])
        arrays += (z["y_test"].astype(np.int64),)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


_TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}


def _download(key: str, data_dir: str | os.PathLike | None) -> None:
    """Let torchvision fetch the files into ``data_dir`` or the cache folder."""
    import torchvision.datasets

    root = Path(data_dir).expanduser() if data_dir is not None else files.default_cache_dir(key)
    cls = getattr(torchvision.datasets, _TORCHVISION_CLASSES[key])
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root=str(root), train=True, download=True)
    except Exception as err:  # network errors come in many types (URLError, OSError, ...)
        looked = ", ".join(str(d) for d in files.candidate_dirs(key, data_dir))
        raise DataError(
            f"dataset {key!r} not found (looked in {looked}) and downloading it to {root} "
            f"failed: {err}"
        ) from err
