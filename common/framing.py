"""Framing of messages on a byte stream, shared by the TCP output and the server.

Three framings, as the syslog ecosystem has them:

- newline: each message ends with ``\\n`` (NDJSON, and RFC 6587's "non-transparent framing");
- octet counting (RFC 6587 section 3.4.1): ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN a decimal number
  without a leading zero;
- auto: decided per frame by its first byte, as rsyslog's imtcp does: a digit starts an
  octet-counted frame, anything else a newline-terminated one. One listener then takes NDJSON,
  and syslog in either framing.

Decoders are incremental (``feed`` bytes as they come, get whole frames back) and bounded: a
frame longer than ``max_frame`` bytes, a length prefix that is not a number, and bytes left over
at the end of the stream (``finish``) raise :class:`FramingError`. After an error the decoder is
unusable: the connection it served is to be closed.
"""

from __future__ import annotations

from common.errors import LogShuttleError

_DIGITS = frozenset(b"0123456789")


class FramingError(LogShuttleError):
    """The stream does not follow its framing (or breaks a limit): close the connection."""


def octet_frame(message: bytes) -> bytes:
    """One message with its RFC 6587 octet-counting prefix."""
    return b"%d %s" % (len(message), message)


def newline_frame(message: bytes) -> bytes:
    """One message ended by a newline (the message must not contain one)."""
    return message + b"\n"


class _Decoder:
    def __init__(self, *, max_frame: int) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._failed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the frames they complete (without framing bytes), in order."""
        if self._failed:
            raise FramingError("the stream already broke its framing")
        self._buf += data
        try:
            return self._frames()
        except FramingError:
            self._failed = True
            self._buf.clear()
            raise

    def pending(self) -> int:
        """Bytes held that belong to a frame not complete yet."""
        return len(self._buf)

    def finish(self) -> None:
        """The stream ended: a frame left half-way is an error."""
        if self._buf and not self._failed:
            n = len(self._buf)
            self._buf.clear()
            raise FramingError(f"the stream ended inside a frame ({n} bytes of it)")

    def _frames(self) -> list[bytes]:
        raise NotImplementedError

    # Shared by the subclasses: one frame off the front of the buffer, or None.

    def _newline_frame(self) -> bytes | None:
        buf = self._buf
        end = buf.find(b"\n", 0, self.max_frame + 2)  # room for a \r before the \n
        if end < 0:
            if len(buf) > self.max_frame + 1:
                raise FramingError(f"no newline within {self.max_frame} bytes")
            return None
        frame = bytes(buf[:end])
        if frame.endswith(b"\r"):
            frame = frame[:-1]
        if len(frame) > self.max_frame:
            raise FramingError(f"no newline within {self.max_frame} bytes")
        del buf[:end + 1]
        return frame

    def _octet_frame(self) -> bytes | None:
        buf = self._buf
        width = len(str(self.max_frame))
        space = buf.find(b" ", 0, width + 1)
        if space < 0:
            head = bytes(buf[:width + 1])
            if any(b not in _DIGITS for b in head) or len(buf) > width:
                raise FramingError(f"bad octet-count prefix {head[:16]!r}")
            return None
        head = bytes(buf[:space])
        if not head or any(b not in _DIGITS for b in head) or head[0] == 0x30:
            raise FramingError(f"bad octet-count prefix {head[:16]!r}")
        length = int(head)
        if length > self.max_frame:
            raise FramingError(f"a frame of {length} bytes is over the limit of {self.max_frame}")
        start = space + 1
        if len(buf) < start + length:
            return None
        frame = bytes(buf[start:start + length])
        del buf[:start + length]
        return frame


class NewlineDecoder(_Decoder):
    """Frames ended by ``\\n`` (a ``\\r`` before it is dropped too); empty lines are skipped."""

    def _frames(self) -> list[bytes]:
        out = []
        while (frame := self._newline_frame()) is not None:
            if frame:
                out.append(frame)
        return out


class OctetDecoder(_Decoder):
    """RFC 6587 octet-counted frames. A newline between frames is tolerated (some senders add
    one); anything else that is not a length prefix is an error."""

    def _frames(self) -> list[bytes]:
        out = []
        while self._buf:
            while self._buf[:1] in (b"\n", b"\r"):
                del self._buf[:1]
            if not self._buf:
                break
            frame = self._octet_frame()
            if frame is None:
                break
            out.append(frame)
        return out


class AutoDecoder(_Decoder):
    """Octet-counted or newline-ended, decided per frame by its first byte (rsyslog's rule)."""

    def _frames(self) -> list[bytes]:
        out = []
        while self._buf:
            while self._buf[:1] in (b"\n", b"\r"):
                del self._buf[:1]
            if not self._buf:
                break
            if self._buf[0] in _DIGITS:
                frame = self._octet_frame()
            else:
                frame = self._newline_frame()
            if frame is None:
                break
            out.append(frame)
        return out


DECODERS = {"newline": NewlineDecoder, "octet": OctetDecoder, "auto": AutoDecoder}


def decoder(kind: str, *, max_frame: int) -> _Decoder:
    """A decoder by name: ``newline``, ``octet`` or ``auto``."""
    try:
        cls = DECODERS[kind]
    except KeyError:
        raise ValueError(f"unknown framing {kind!r}") from None
    return cls(max_frame=max_frame)
