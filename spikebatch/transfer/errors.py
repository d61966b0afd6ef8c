"""Transfer errors: one base class so callers can catch every transfer failure at once."""

from __future__ import annotations


class TransferError(RuntimeError):
    """A download, upload or object operation failed; the message says which and why."""


class SizeMismatchError(TransferError):
    """The source's size differs from the size the caller expected (e.g. DANDI metadata)."""


class DigestMismatchError(TransferError):
    """The downloaded bytes do not hash to the expected digest, even after retries."""


class NotFoundError(TransferError, FileNotFoundError):
    """The object or file does not exist (also a ``FileNotFoundError`` for callers)."""
