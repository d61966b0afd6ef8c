"""A read-only, seekable file over HTTP ``Range`` requests, for reading a remote file's header.

h5py opens any Python file object; on this one it reads an NWB's object headers (a few
blocks) without fetching the traces, so the worker sizes its scratch from the real shape
of the raw series before it downloads. Plain ``requests`` on one session, closed with the
file: no event loop or background thread survives into the worker's forked processes.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import requests

from spikebatch.transfer.errors import TransferError
from spikebatch.transfer.ranged_http import TIMEOUT_S, new_session, redact

#: Bytes per request: HDF5 object headers are small and scattered; 256 KiB blocks keep the
#: request count low without reading much more than needed.
BLOCK_BYTES = 256 * 1024
#: Blocks kept in memory (LRU): a few MiB.
CACHED_BLOCKS = 32


class RangedFile(io.RawIOBase):
    """``open()``-like access to ``url`` of ``size`` bytes, block by block, cached."""

    def __init__(self, url: str, size: int, *, block_bytes: int = BLOCK_BYTES) -> None:
        super().__init__()
        self.url, self.size, self.block_bytes = url, size, block_bytes
        self.session: requests.Session = new_session(1)
        self.position = 0
        self.requests = 0
        self.bytes_fetched = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self.position))
        done = 0
        while done < wanted:
            index, offset = divmod(self.position + done, self.block_bytes)
            block = self._block(index)
            take = min(wanted - done, len(block) - offset)
            if take <= 0:
                break
            view[done : done + take] = block[offset : offset + take]
            done += take
        self.position += done
        return done

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        start = index * self.block_bytes
        end = min(self.size, start + self.block_bytes) - 1
        response = self.session.get(
            self.url, headers={"Range": f"bytes={start}-{end}"}, timeout=TIMEOUT_S
        )
        if response.status_code != 206:
            raise TransferError(
                f"GET {redact(self.url)} bytes {start}-{end}: HTTP {response.status_code} "
                "(the server must answer ranges)"
            )
        data = response.content
        self.requests += 1
        self.bytes_fetched += len(data)
        self._blocks[index] = data
        if len(self._blocks) > CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return data

    def close(self) -> None:
        if not self.closed:
            self.session.close()
        super().close()
