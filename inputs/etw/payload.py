"""Reading ETW payloads: little-endian integers, FILETIMEs, SIDs, UTF-16 and ANSI strings.

Both the fixed Kernel-Process layouts (``kernel_process``) and the TDH-described layouts
(``tdh``) read through :class:`Reader`, which raises :class:`PayloadError` (never IndexError or
struct.error) naming the field and offset when the bytes run out or do not make sense.
"""

from __future__ import annotations

import struct

from inputs.etw.errors import PayloadError
from inputs.etw.structs import filetime_to_unix_ns, guid_text

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Reader:
    """A cursor over one payload. Every read names its field, for the error message."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = bytes(data)
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PayloadError(f"{field}: needs {n} bytes at offset {self.pos}, "
                               f"the payload has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return _U16.unpack(self.take(2, field))[0]

    def u32(self, field: str) -> int:
        return _U32.unpack(self.take(4, field))[0]

    def u64(self, field: str) -> int:
        return _U64.unpack(self.take(8, field))[0]

    def unpack(self, fmt: struct.Struct, field: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, field))

    def filetime_ns(self, field: str) -> int:
        """A FILETIME, as nanoseconds since the Unix epoch (0 stays 0)."""
        return filetime_to_unix_ns(self.u64(field))

    def guid(self, field: str) -> str:
        return guid_text(self.take(16, field))

    def sid(self, field: str) -> str:
        """A SID (revision, sub-authority count, 6-byte big-endian authority, u32 sub-authorities)
        as its ``S-1-...`` text."""
        start = self.pos
        revision = self.u8(field)
        count = self.u8(field)
        if revision != 1 or count > 15:
            raise PayloadError(f"{field}: not a SID at offset {start} (revision {revision}, "
                               f"{count} sub-authorities)")
        authority = int.from_bytes(self.take(6, field), "big")
        subs = struct.unpack(f"<{count}I", self.take(4 * count, field))
        return "-".join(["S", "1", str(authority), *map(str, subs)])

    def utf16z(self, field: str) -> str:
        """A NUL-terminated UTF-16LE string (the terminator is consumed)."""
        data, pos = self.data, self.pos
        end = pos
        while True:
            end = data.find(b"\0\0", end)
            if end < 0:
                raise PayloadError(f"{field}: UTF-16 string at offset {pos} has no terminator")
            if (end - pos) % 2 == 0:
                break
            end += 1  # the zero pair straddles two characters: look further
        self.pos = end + 2
        return data[pos:end].decode("utf-16-le", "replace")

    def utf16(self, chars: int, field: str) -> str:
        """``chars`` UTF-16 code units, up to the first NUL among them."""
        raw = self.take(2 * chars, field).decode("utf-16-le", "replace")
        return raw.split("\0", 1)[0]

    def ansiz(self, field: str) -> str:
        """A NUL-terminated 8-bit string (decoded as Latin-1: ETW does not say which code page)."""
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PayloadError(f"{field}: string at offset {self.pos} has no terminator")
        out = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return out

    def ansi(self, n: int, field: str) -> str:
        return self.take(n, field).split(b"\0", 1)[0].decode("latin-1")
