"""A file's identity: (device, inode) and a fingerprint of its first bytes.

(device, inode) alone is not enough: once a file is deleted and closed, its inode number is
free, and the next file created may get it. The fingerprint tells the two apart: a BLAKE2b hash
of the first ``min(size, FINGERPRINT_BYTES)`` bytes, with the number of bytes it covers. A file
shorter than FINGERPRINT_BYTES has a fingerprint of the bytes it has; as it grows, the
fingerprint is extended (``extend``) and still matches, because the bytes it covered have not
changed. An empty file has the empty fingerprint, which matches any file: it cannot be told from
another until it has bytes, and nothing is lost by that, since it has nothing to read either.

The fingerprint also recognises a copy (copytruncate's ``app.log.1``): other inode, same first
bytes.
"""

from __future__ import annotations

import os

import msgspec

from common.hashing import blake2b

FINGERPRINT_BYTES = 1024


class Fingerprint(msgspec.Struct, frozen=True, array_like=True):
    length: int
    """How many leading bytes the digest covers (at most FINGERPRINT_BYTES)."""
    digest: str
    """BLAKE2b-64 of those bytes, hex."""

    @classmethod
    def of_bytes(cls, data: bytes) -> Fingerprint:
        data = data[:FINGERPRINT_BYTES]
        return cls(len(data), blake2b(data, digest_size=8).hexdigest())

    @classmethod
    def of_fd(cls, fd: int) -> Fingerprint:
        return cls.of_bytes(os.pread(fd, FINGERPRINT_BYTES, 0))

    def matches_fd(self, fd: int) -> bool:
        """Whether the file's first ``length`` bytes are still the ones fingerprinted."""
        if self.length == 0:
            return True
        data = os.pread(fd, self.length, 0)
        return len(data) == self.length and Fingerprint.of_bytes(data).digest == self.digest

    def extend(self, fd: int, size: int) -> Fingerprint:
        """The fingerprint over more bytes, once the file has them (self if complete)."""
        if self.length >= FINGERPRINT_BYTES or size <= self.length:
            return self
        return Fingerprint.of_fd(fd)
