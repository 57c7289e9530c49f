"""Image-folder datasets streamed from disk: Tiny ImageNet and ImageNet.

Each lister returns ``(classes, train_samples, test_samples)`` with samples as
``(path, class index)`` pairs and classes sorted by name, as torchvision's ``ImageFolder`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from curvprune.data.registry import DatasetInfo
from curvprune.errors import DataError

if TYPE_CHECKING:
    from torchvision import transforms

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Samples = list[tuple[Path, int]]


def open_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, or raise `DataError` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def _images_in(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted for a stable order."""
    found = []
    for dirpath, _, names in os.walk(folder, followlinks=True):
        found += [Path(dirpath) / n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def list_tinyimagenet(root: Path) -> tuple[list[str], Samples, Samples]:
    """List ``tiny-imagenet-200/``: the labelled ``val`` split serves as the test set.

    Layout: ``wnids.txt`` (one class id per line), ``train/<wnid>/images/*.JPEG``,
    ``val/images/*.JPEG`` and ``val/val_annotations.txt`` (tab-separated file name, wnid, box).
    """
    wnids_file = root / "wnids.txt"
    classes = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    if not classes:
        raise DataError(f"{wnids_file} lists no classes")
    index = {wnid: i for i, wnid in enumerate(classes)}
    train: Samples = []
    for wnid in classes:
        folder = root / "train" / wnid / "images"
        images = _images_in(folder)
        if not images:
            raise DataError(f"no training images for class {wnid} in {folder}")
        train += [(p, index[wnid]) for p in images]
    annotations = root / "val" / "val_annotations.txt"
    val_dir = root / "val" / "images"
    present = set(os.listdir(val_dir))
    test: Samples = []
    for lineno, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations}:{lineno}: expected '<file>\\t<wnid>...', got {line!r}")
        if fields[0] not in present:
            raise DataError(f"{annotations}:{lineno}: image {val_dir / fields[0]} does not exist")
        test.append((val_dir / fields[0], index[fields[1]]))
    if not test:
        raise DataError(f"{annotations} lists no validation images")
    return classes, train, test


def list_imagenet(root: Path) -> tuple[list[str], Samples, Samples]:
    """List an ImageFolder tree: ``train/<class>/*`` and ``val/<class>/*`` (same class names)."""
    train_dir, val_dir = root / "train", root / "val"
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{train_dir} holds no class folders (expected train/<class>/*.JPEG)")
    index = {name: i for i, name in enumerate(classes)}
    val_classes = sorted(d.name for d in val_dir.iterdir() if d.is_dir())
    unknown = sorted(set(val_classes) - set(index))
    if not val_classes or unknown:
        raise DataError(
            f"{val_dir} must hold one folder per class, named as in {train_dir}"
            + (f"; unknown: {', '.join(unknown[:5])}" if unknown else "; found none")
            + " (the raw ILSVRC val images must first be sorted into class folders)"
        )
    splits: list[Samples] = []
    for split_dir, names in ((train_dir, classes), (val_dir, val_classes)):
        samples = [(p, index[c]) for c in names for p in _images_in(split_dir / c)]
        if not samples:
            raise DataError(f"no images found under {split_dir}")
        splits.append(samples)
    return classes, splits[0], splits[1]


def image_transforms(
    key: str, info: DatasetInfo, *, augment: bool
) -> tuple[transforms.Compose, transforms.Compose]:
    """Standard (train, test) torchvision transforms for a streamed dataset."""
    from torchvision import transforms  # imported here: torchvision is slow to import

    normalize = [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    size = info.image_size
    if key == "tinyimagenet":
        # The images are already 64x64; Resize guards against odd-sized extras.
        test = [transforms.Resize(size), transforms.CenterCrop(size)]
        train = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()]
        train = [*test, *train]
    else:
        test = [transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)]
        train = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    train_tf = transforms.Compose((train if augment else test) + normalize)
    return train_tf, transforms.Compose(test + normalize)
