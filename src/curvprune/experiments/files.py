"""Files that readers may open at any moment: written whole or not at all.

Also the checks on a run's output folder that belong before any work: that ``--out`` is a
writable directory, and that no output would overwrite one of the run's inputs.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curvprune.errors import OutputError

__all__ = [
    "atomic_write_json",
    "atomic_write_text",
    "check_out_dir",
    "json_safe",
    "refuse_overwrite",
]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half.

    The temporary file is removed if writing fails (a full disk, say).

    Raises:
        OutputError: If the folder cannot be written (read-only, full, a file in the way).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {describe_os_error(err)}") from err


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """`atomic_write_text` of strict JSON: non-finite floats become ``null``, never ``NaN``."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")


def describe_os_error(err: OSError) -> str:
    """A short reason for an OS error on a user's path, without errno numbers."""
    reasons = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a file is in the way of the folder",
        errno.EEXIST: "a file is in the way of the folder",
        errno.EISDIR: "it is a directory",
        errno.ELOOP: "symlink loop",
    }
    return reasons.get(err.errno, err.strerror or type(err).__name__)


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``path`` if needed and check that files can be written there; return it.

    Called before a run starts, so that a read-only or mistyped ``--out`` fails at once
    rather than after the training.

    Raises:
        OutputError: ``--out PATH is a file``, or the folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write to {flag} {path}: {describe_os_error(err)}") from err
    return path


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the path as given
        return Path(os.path.abspath(path))


def refuse_overwrite(
    inputs: Iterable[tuple[str, str | os.PathLike | None]], outputs: Iterable[str | os.PathLike]
) -> None:
    """Stop if an output file is an input file (after resolving ``..`` and symlinks).

    Args:
        inputs: ``(flag, path)`` pairs of the run's input files; None paths are skipped.
        outputs: Files the run will write.

    Raises:
        OutputError: Naming the flag of the input that would be overwritten.
    """
    written = {_resolved(p): Path(p) for p in outputs}
    for flag, path in inputs:
        if path is None:
            continue
        target = _resolved(path)
        if target in written:
            raise OutputError(
                f"{flag} {path} would be overwritten by the output {written[target]}; choose "
                "another --out"
            )
