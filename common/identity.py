"""Stable record ids: the same record gets the same id however often it is sent.

- The agent's id: 16 hex digits, random, made once and kept in ``<state_dir>/agent-id`` (written
  to a temporary file, fsynced, linked into place: two agents starting at once on one state
  directory both end up with the one that was linked first, and a crash leaves either no file
  or a whole one).
- The session: 8 hex digits, new at every start of the agent (the supervisor). Events that no
  file holds (eBPF, ETW, losses) cannot be read again after a restart, so their ids need only be
  unique and stable for as long as they sit in the agent's queues: session + the input's index
  + a sequence (see ``event_seq``).
- A log line: agent id, the file's identity (``LogEvent.fid``: device, inode and the file's
  first line), and the line's byte offset. A piece of an over-long line has its own offset, so
  its own id.

Formats (what NDJSON ``id``, the OTLP attribute ``log_shuttle.record_id`` and ``Nats-Msg-Id``
carry)::

    <agent>.<fid: 16 hex>.<offset>                   a log line (or a piece of one)
    <agent>.<session>-<input>.<sequence>             any other event

``source_of`` / ``position_of`` split an id into its source (everything before the last dot)
and its position (the number after it): within one source, positions only grow in the order
the agent sends, which is what the server's exactly-once store keeps per source.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from common.errors import LogShuttleError
from common.hashing import blake2b

AGENT_ID_FILE = "agent-id"
HEAD_BYTES = 1024
"""The file identity covers the file's first line, at most this many bytes of it."""

SEQ_BITS = 20
"""An event's sequence is (input message seq << SEQ_BITS) | its index in that message."""
INPUT_SHIFT = 56
"""``event_seq`` packs the input's index above this bit."""


class IdentityError(LogShuttleError):
    """The agent id cannot be read or made (state directory not writable, file damaged)."""


class IdentityNotKept(IdentityError):
    """The state directory cannot keep a new agent id (read-only, full): the caller may run
    with an id of this run only (:func:`ephemeral_identity`), saying so."""


@dataclass(frozen=True)
class Identity:
    """Who sends: the persistent agent id and this run's session."""

    agent: str
    session: str


def _random_hex(n: int) -> str:
    """``n`` random bytes from the OS as hex: what ``secrets.token_hex`` does, without importing
    ``secrets`` (through ``hmac`` it loads OpenSSL's libcrypto: see common.hashing)."""
    return os.urandom(n).hex()


def ephemeral_identity() -> Identity:
    """An agent id that lives as long as this run: record ids stay unique, but a replay after a
    restart carries new ones, so receivers cannot drop what they already have."""
    return Identity(agent=_random_hex(8), session=_random_hex(4))


def load_identity(state_dir: str) -> Identity:
    """The agent id kept in ``state_dir`` (made on first use) and a new session."""
    return Identity(agent=agent_id(state_dir), session=_random_hex(4))


def agent_id(state_dir: str) -> str:
    path = os.path.join(state_dir, AGENT_ID_FILE)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        os.makedirs(state_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (_random_hex(8) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process linked its own first: use that one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return _read(path)
    except OSError as exc:
        raise IdentityNotKept(f"cannot keep the agent id in {path}: {exc.strerror or exc}") \
            from exc


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read().strip()
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise IdentityError(f"{path} does not hold an agent id (16 hex digits): {text[:40]!r}; "
                            f"remove it to make a new one (records will get new ids)")
    return text


def file_id(dev: int, ino: int, head: bytes) -> int:
    """A file's identity for record ids: BLAKE2b-64 of device, inode and its first line (at
    most HEAD_BYTES of it). Those bytes are written before any line of the file can be sent and
    do not change until the file is truncated, when the new first line makes a new identity
    (unless it is the very same bytes: see docs/jetstream.md)."""
    nl = head.find(b"\n", 0, HEAD_BYTES)
    head = head[: nl + 1] if nl >= 0 else head[:HEAD_BYTES]
    h = blake2b(struct.pack("<QQ", dev & (2**64 - 1), ino & (2**64 - 1)), digest_size=8)
    h.update(head)
    return int.from_bytes(h.digest(), "big") or 1


def line_prefix(agent: str, fid: int) -> str:
    """Everything of a line's id but its offset; "" when its lines get no id (no agent id, or
    the file's identity unknown: ``fid`` 0)."""
    return f"{agent}.{fid:016x}." if agent and fid else ""


def event_seq(input_index: int, message_seq: int, index: int) -> int:
    return (input_index << INPUT_SHIFT) | (message_seq << SEQ_BITS) | index


def event_id(agent: str, session: str, seq: int) -> str:
    return f"{agent}.{session}-{seq >> INPUT_SHIFT}.{seq & ((1 << INPUT_SHIFT) - 1)}"


def source_of(record_id: str) -> str:
    return record_id.rpartition(".")[0]


def position_of(record_id: str) -> int:
    return int(record_id.rpartition(".")[2])
