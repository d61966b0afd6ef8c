"""Uploads that cannot be an NWB file are told apart from the first 4 KiB (pure Python)."""

from __future__ import annotations

import io
import re

import h5py
import numpy as np
import pytest

from spikebatch.control.nwb_check import HEAD_BYTES, NotAnNwbError, check_head, required_size


def hdf5(libver: str, userblock: int = 0) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"userblock_size": userblock} if userblock else {}
    with h5py.File(buffer, "w", libver=libver, **kwargs) as f:
        f["acquisition/data"] = np.arange(5000, dtype="int16")
    return buffer.getvalue()


@pytest.mark.parametrize("libver", ["earliest", "v108", "v110", "latest"])
@pytest.mark.parametrize("userblock", [0, 512, 2048])
def test_every_superblock_version_gives_the_files_length(libver: str, userblock: int) -> None:
    data = hdf5(libver, userblock)
    assert required_size(data[:HEAD_BYTES]) == len(data)
    check_head(data[:HEAD_BYTES], len(data))
    with pytest.raises(NotAnNwbError, match=r"^truncated: .* says the file is \d+ bytes long"):
        check_head(data[:HEAD_BYTES], len(data) - 1)


@pytest.mark.parametrize(
    ("head", "size", "message"),
    [
        (b"", 0, "the upload is empty (0 bytes)"),
        (b"PK\x03\x04" + b"\0" * 100, 104, "not an NWB (HDF5) file: no HDF5 signature"),
        (b"\x89HDF\r\n\x1a\n\x00", 9, "the HDF5 superblock is cut off"),
        (b"\x89HDF\r\n\x1a\n\x09" + b"\0" * 100, 109, "unknown HDF5 superblock version 9"),
    ],
)
def test_what_is_not_a_complete_hdf5_file_says_why(head: bytes, size: int, message: str) -> None:
    with pytest.raises(NotAnNwbError, match=f"^{re.escape(message)}"):
        check_head(head, size)
