"""Is an upload an NWB file at all? Decided from its first bytes, before a GPU is paid for.

NWB files are HDF5 files. An HDF5 file starts with an 8-byte signature at offset 0 (or at
512, 1024, 2048... after a user block), followed by the superblock, which records the
**end-of-file address**: how long the file must be. An upload shorter than that was cut
off (an interrupted ``aws s3 cp``, a copy of a file still being written). So one ranged
GET of the first :data:`HEAD_BYTES` bytes tells "not HDF5" and "truncated" apart from a
file worth sorting. Pure Python (``struct``): it runs in the submit Lambda.

Superblock layouts: HDF5 File Format Specification 3.0, section II.A (versions 0 and 1:
base address at byte 24 or 28; versions 2 and 3: at byte 12; in all four the end-of-file
address is the third file address from there). The HDF5 library writes it as the file's
whole length, user block included (checked with h5py for every ``libver``, with and
without a user block), so it is compared with the object's size as is.
"""

from __future__ import annotations

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEAD_BYTES = 4096
"""What the submit Lambda reads of an upload: the signature and superblock, with room for a
user block of up to 2 KiB before them."""
_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048)
# Where the base address starts, per superblock version.
_BASE_ADDRESS_AT = {0: 24, 1: 28, 2: 12, 3: 12}


class NotAnNwbError(ValueError):
    """The upload cannot be an NWB file (one line saying why)."""


def _address(head: bytes, at: int, size: int) -> int | None:
    raw = head[at : at + size]
    if len(raw) < size:
        raise NotAnNwbError("the HDF5 superblock is cut off (the upload is truncated)")
    if raw == b"\xff" * size:  # HDF5's "undefined address"
        return None
    return int.from_bytes(raw, "little")


def required_size(head: bytes) -> int | None:
    """The byte length the superblock says the file has (None if it does not say).

    Raises :class:`NotAnNwbError` if ``head`` holds no HDF5 superblock.
    """
    start = next((at for at in _SUPERBLOCK_OFFSETS if head[at : at + 8] == HDF5_SIGNATURE), None)
    if start is None:
        found = head[:8].hex(" ") if head else "nothing"
        raise NotAnNwbError(
            f"not an NWB (HDF5) file: no HDF5 signature in the first {HEAD_BYTES} bytes"
            f" (it starts with {found})"
        )
    if len(head) < start + 14:
        raise NotAnNwbError("the HDF5 superblock is cut off (the upload is truncated)")
    version = head[start + 8]
    if version not in _BASE_ADDRESS_AT:
        raise NotAnNwbError(f"unknown HDF5 superblock version {version}")
    offset_size = head[start + 13] if version < 2 else head[start + 9]
    if offset_size not in (2, 4, 8, 16):
        raise NotAnNwbError(f"corrupt HDF5 superblock (size of offsets {offset_size})")
    # The base address, one more address, then the end-of-file address.
    return _address(head, start + _BASE_ADDRESS_AT[version] + 2 * offset_size, offset_size)


def check_head(head: bytes, object_size: int) -> None:
    """Raise :class:`NotAnNwbError` unless ``head`` (the first bytes of an object of
    ``object_size`` bytes) starts a complete HDF5 file."""
    if object_size == 0:
        raise NotAnNwbError("the upload is empty (0 bytes)")
    needed = required_size(head)
    if needed is not None and object_size < needed:
        raise NotAnNwbError(
            f"truncated: its HDF5 superblock says the file is {needed} bytes long, but the"
            f" upload holds {object_size} ({needed - object_size} missing); upload it again"
        )
