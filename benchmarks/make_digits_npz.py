"""Write ``src/curvprune/data/digits.npz``: the digits data set with curvprune's fixed split.

The arrays are exactly what curvprune drew from scikit-learn before the data were shipped
inside the package: ``load_digits()`` (1797 8×8 images, pixel values 0..16) split by
``train_test_split(test_size=360, stratify=y, random_state=0)``. Run it from the repository
root (needs scikit-learn, e.g. ``pip install -e .[dev]``)::

    python benchmarks/make_digits_npz.py

and check ``git diff --stat``: the file should not change. ``tests/test_data.py`` compares
the shipped file with scikit-learn's split whenever scikit-learn is installed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# As in curvprune.data.loading (DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED); not imported, so that
# the split stays written down here even if those constants move.
TEST_SIZE = 360
SPLIT_SEED = 0
OUT = Path(__file__).resolve().parents[1] / "src" / "curvprune" / "data" / "digits.npz"


def digits_split() -> dict[str, np.ndarray]:
    """``x_train``, ``y_train``, ``x_test``, ``y_test``: uint8 images (N, 1, 8, 8), uint8
    labels."""
    bunch = load_digits()
    x = bunch.data.astype(np.uint8).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    return {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (what ``np.savez_compressed`` writes) with fixed timestamps, so that the
    same arrays give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue())
    return buffer.getvalue()


def main() -> None:
    OUT.write_bytes(npz_bytes(digits_split()))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
