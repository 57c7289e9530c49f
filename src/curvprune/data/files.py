"""Finding dataset files on disk.

Lookup order, first complete match wins: the explicit ``data_dir`` (the dataset folder itself or
a parent holding ``<name>/``), ``$CURVPRUNE_DATA/<name>``, ``$XDG_CACHE_HOME/curvprune/<name>``
(default ``~/.cache/curvprune/<name>``), then
system-wide copies (``/usr/share/datasets/fashion-mnist`` from the Debian package
``dataset-fashion-mnist``). Inside each of those folders the torchvision layouts
(``MNIST/raw/``, ``cifar-10-batches-py/``, ...) are also accepted, so a torchvision ``root``
works as ``data_dir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curvprune.errors import DataError

ENV_VAR = "CURVPRUNE_DATA"

_IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Per dataset: the files that must all exist (relative to the matched folder), the sub-folders
# of a candidate folder to try (torchvision's layouts), and system-wide copies.
REQUIRED: dict[str, tuple[str, ...]] = {
    "mnist": _IDX,
    "fashion-mnist": _IDX,
    "cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    "cifar100": ("train", "test"),
    "tinyimagenet": ("wnids.txt", "train", "val/images", "val/val_annotations.txt"),
    "imagenet": ("train", "val"),
}
SUBDIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("", "raw", "MNIST/raw"),
    "fashion-mnist": ("", "raw", "FashionMNIST/raw"),
    "cifar10": ("cifar-10-batches-py", ""),
    "cifar100": ("cifar-100-python", ""),
    "tinyimagenet": ("tiny-imagenet-200", ""),
    "imagenet": ("",),
}
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
# IDX files may be gzipped (as distributed) or plain (as torchvision extracts them).
_GZ_OPTIONAL = {"mnist", "fashion-mnist"}


@dataclass(frozen=True)
class Found:
    """A dataset folder with all required files.

    Attributes:
        root: The folder holding the files.
        files: Required name (as in `REQUIRED`) -> actual path (may end in ``.gz``).
    """

    root: Path
    files: dict[str, Path]


def candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders to search for dataset ``name``, in lookup order (before sub-folders)."""
    dirs: list[Path] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        dirs += [base, base / name]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(default_cache_dir(name))
    dirs += SYSTEM_DIRS.get(name, ())
    return dirs


def default_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/curvprune/<name>``, or ``~/.cache/curvprune/<name>``.

    The second when that variable is unset or empty. Searched for files, and where downloads go
    without ``data_dir``.
    """
    cache = os.environ.get("XDG_CACHE_HOME")
    root = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return root / "curvprune" / name


def _match(name: str, root: Path) -> tuple[dict[str, Path], list[str]]:
    """Required files present in ``root`` and the names of the missing ones."""
    found, missing = {}, []
    for rel in REQUIRED[name]:
        path = root / rel
        if name in _GZ_OPTIONAL and not path.is_file():
            path = root / (rel + ".gz")
        if path.exists():
            found[rel] = path
        else:
            missing.append(rel)
    return found, missing


def find_files(name: str, data_dir: str | os.PathLike | None = None) -> Found:
    """Locate the files of dataset ``name``.

    Args:
        name: A key of `REQUIRED` (every on-disk dataset).
        data_dir: Optional folder searched first.

    Returns:
        The first folder, in lookup order, holding every required file.

    Raises:
        DataError: Nothing complete was found; the message lists every folder looked in and,
            for folders holding some of the files, which ones are missing.
    """
    if data_dir is not None and not Path(data_dir).expanduser().exists():
        # a typo must not silently fall through to another copy of the data
        raise DataError(f"data_dir {str(data_dir)!r} does not exist (dataset {name!r})")
    looked: list[str] = []
    seen: set[Path] = set()
    for base in candidate_dirs(name, data_dir):
        if base in seen:
            continue
        seen.add(base)
        partial = []
        for sub in SUBDIRS[name]:
            root = base / sub if sub else base
            found, missing = _match(name, root)
            if not missing:
                return Found(root=root, files=found)
            if found:
                partial.append(
                    f"{root} has {len(found)} of the files, missing {', '.join(missing)}"
                )
        looked.append(f"{base} ({'; '.join(partial)})" if partial else str(base))
    raise DataError(not_found_message(name, looked))


def not_found_message(name: str, looked: list[str]) -> str:
    """One-line message for a dataset that was not found."""
    need = ", ".join(REQUIRED[name]) + (" (each optionally .gz)" if name in _GZ_OPTIONAL else "")
    subs = [f"{sub}/" for sub in SUBDIRS[name] if sub]
    inside = f" (and inside each: {', '.join(subs)})" if subs else ""
    from curvprune.data.registry import DATASETS

    info = DATASETS.get(name)
    download = (
        f", or add --download (download=True) to let torchvision fetch them into "
        f"{default_cache_dir(name)} or --data-dir"
        if info is not None and info.downloadable
        else ""
    )
    return (
        f"dataset {name!r} not found: need {need}; looked in: {', '.join(looked)}{inside}. "
        f"Pass data_dir=... (--data-dir on the command line), set ${ENV_VAR}, or put the "
        f"files in {default_cache_dir(name)}{download}"
    )
