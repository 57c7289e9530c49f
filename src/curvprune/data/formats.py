"""Readers for on-disk formats: IDX (MNIST family) and the CIFAR python pickles.

Both validate what they read and raise `DataError` naming the file on any inconsistency, so a
truncated download fails loudly instead of training on garbage.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import io
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from curvprune.errors import DataError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err} (truncated or corrupt download?)") from err


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped).

    Args:
        path: File path, ``.gz`` or plain.
        ndim: Expected number of dimensions: 3 for images (N, rows, cols), 1 for labels (N,).

    Returns:
        A uint8 array of the stored shape.

    Raises:
        DataError: Unreadable file, wrong magic number, or a size that does not match the header.
    """
    data = _read_bytes(path)
    expected_magic = 0x00000800 | ndim
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad IDX magic number {magic:#010x}, expected {expected_magic:#010x} "
            f"(unsigned bytes, {ndim} dimension(s))"
        )
    dims = struct.unpack(f">{ndim}i", data[4:header])
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DataError(
            f"{path}: header says shape {dims} ({size} bytes) but the file holds "
            f"{len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images: Path, labels: Path, *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label IDX files and check they agree.

    Returns:
        ``(images, labels)``: uint8 arrays of shape (N, rows, cols) and (N,).
    """
    x = read_idx(images, ndim=3)
    y = read_idx(labels, ndim=1)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} holds {x.shape[0]} images but {labels} {y.shape[0]} labels")
    if y.size and int(y.max()) >= num_classes:
        raise DataError(f"{labels}: label {int(y.max())} out of range 0..{num_classes - 1}")
    return x, y


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


# The only globals a pickle of plain dicts, lists and numpy arrays needs. numpy 2 renamed
# ``numpy.core`` to ``numpy._core``; files written by either must load. ``_codecs.encode`` is how
# Python 3 stores bytes in protocol-2 pickles; it only encodes a string.
_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _mod in _MULTIARRAY:
    _ALLOWED[(_mod, "_reconstruct")] = _numpy_attr(_MULTIARRAY, "_reconstruct")
    _ALLOWED[(_mod, "scalar")] = _numpy_attr(_MULTIARRAY, "scalar")
for _mod in _NUMERIC:
    _ALLOWED[(_mod, "_frombuffer")] = _numpy_attr(_NUMERIC, "_frombuffer")
_ALLOWED = {key: value for key, value in _ALLOWED.items() if value is not None}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction globals.

    A pickle can name any importable callable (``os.system``) and the default unpickler calls it;
    refusing every other global makes loading a downloaded file safe.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}") from None


def load_safe_pickle(path: Path) -> dict[str, Any]:
    """Load a pickled dict of numpy arrays and lists, refusing anything else.

    Keys are returned as ``str`` whether the file stores them as bytes (Python 2 / CIFAR) or str.

    Raises:
        DataError: The file is unreadable, not a dict, or names a global outside numpy's
            array reconstruction (the message says which).
    """
    try:
        raw = path.read_bytes()
        # latin1 is what numpy needs to read arrays pickled by Python 2 (the CIFAR files).
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: unsafe or corrupt pickle: {err}") from err
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise DataError(f"{path}: corrupt pickle: {err!r}") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(
    path: Path, *, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file.

    Args:
        path: A file such as ``cifar-10-batches-py/data_batch_1`` or ``cifar-100-python/train``.
        label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).
        num_classes: For the label range check.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,).
    """
    d = load_safe_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(d)}")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' should be uint8 of shape (N, 3072), is {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels
