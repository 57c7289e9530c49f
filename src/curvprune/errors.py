"""Exception types: every user mistake raises a `CurvpruneError` subclass.

The CLI turns any `CurvpruneError` into one line on stderr and exit status 2; anything else is a
bug and keeps its traceback. The subclasses also derive from the built-in type a Python user
expects (`ValueError`, `TypeError`, `FileNotFoundError`), so ``except ValueError`` still works.
"""


class CurvpruneError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class InvalidArgument(CurvpruneError, ValueError):
    """A value out of range or an unknown name; the message names the value and valid choices."""


class InvalidType(CurvpruneError, TypeError):
    """An argument of the wrong type; the message says what to pass instead."""


class DataError(CurvpruneError, FileNotFoundError):
    """Data files missing or corrupt; the message names the path and where we looked."""


class CheckpointError(CurvpruneError, ValueError):
    """A checkpoint that is missing, corrupt, unsafe or does not match the model."""


class Diverged(CurvpruneError, FloatingPointError):
    """Training produced a non-finite loss or weights; the message names the epoch and rate."""


class OutputError(CurvpruneError, OSError):
    """An output path that cannot be written, or that would overwrite one of the run's inputs."""
