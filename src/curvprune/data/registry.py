"""The dataset registry: one `DatasetInfo` per name, used by `load_data`, the CLI and the docs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: Registry key, e.g. ``"cifar10"``.
        description: One line for ``curvprune list``.
        in_channels: Channels of an input image.
        num_classes: Number of target classes.
        image_size: Side length in pixels of the (square) network input.
        mean: Per-channel mean of the [0, 1]-scaled training images, subtracted on loading.
        std: Per-channel standard deviation, divided out on loading.
        in_memory: True if the whole dataset is held as tensors (fast batch iterator);
            False if it streams from disk through a ``torch.utils.data.DataLoader``.
        downloadable: True if torchvision can download it (``load_data(..., download=True)``).
        files: Where the files come from and what they are, for error messages and docs.
    """

    name: str
    description: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool
    downloadable: bool = False
    files: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        description="UCI 8x8 handwritten digits (as in scikit-learn), 1437 train / 360 test, "
        "shipped with curvprune",
        in_channels=1,
        num_classes=10,
        image_size=8,
        # Mean and std of all 1797 images scaled to [0, 1] (pixel value / 16).
        mean=(0.3053,),
        std=(0.3760,),
        in_memory=True,
        files="shipped in the package (curvprune/data/digits.npz, UCI data, CC BY 4.0)",
    ),
    "mnist": DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits, 28x28 grey, 60000 train / 10000 test",
        in_channels=1,
        num_classes=10,
        image_size=28,
        mean=(0.1307,),
        std=(0.3081,),
        in_memory=True,
        downloadable=True,
        files="IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images, 28x28 grey, 60000 train / 10000 test",
        in_channels=1,
        num_classes=10,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        in_memory=True,
        downloadable=True,
        files="IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        description="CIFAR-10 colour images, 32x32, 10 classes, 50000 train / 10000 test",
        in_channels=3,
        num_classes=10,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        in_memory=True,
        downloadable=True,
        files="cifar-10-batches-py/ with data_batch_1..5 and test_batch (python pickles)",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        description="CIFAR-100 colour images, 32x32, 100 classes, 50000 train / 10000 test",
        in_channels=3,
        num_classes=100,
        image_size=32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        in_memory=True,
        downloadable=True,
        files="cifar-100-python/ with train and test (python pickles)",
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        description="Tiny ImageNet, 64x64 colour, 200 classes, 100000 train / 10000 val",
        in_channels=3,
        num_classes=200,
        image_size=64,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
        in_memory=False,
        files="tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/, val/val_annotations.txt",
    ),
    "imagenet": DatasetInfo(
        name="imagenet",
        description="ImageNet ILSVRC-2012, 224x224 crops, 1000 classes, streamed from disk",
        in_channels=3,
        num_classes=1000,
        image_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        in_memory=False,
        files="ImageFolder layout: train/<class>/*.JPEG and val/<class>/*.JPEG",
    ),
}
