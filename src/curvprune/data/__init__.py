"""Datasets by name: in-memory tensors for small ones, streamed image folders for large ones.

Example:
    >>> from curvprune.data import load_data
    >>> data = load_data("digits", batch_size=64)
    >>> data.num_train, data.num_test
    (1437, 360)
    >>> x, y = next(iter(data.train))
    >>> tuple(x.shape), tuple(y.shape)
    ((64, 1, 8, 8), (64,))
"""

from curvprune.data.files import ENV_VAR, find_files
from curvprune.data.loaders import BatchTransform, StreamLoader, TensorLoader
from curvprune.data.loading import DataBundle, load_data
from curvprune.data.registry import DATASETS, DatasetInfo

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "BatchTransform",
    "DataBundle",
    "DatasetInfo",
    "StreamLoader",
    "TensorLoader",
    "find_files",
    "load_data",
]
