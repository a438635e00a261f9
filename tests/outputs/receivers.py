"""Receivers that misbehave, for the TCP output's tests: real sockets served by a thread.

:class:`HangUpReceiver` closes every connection after reading ``cut`` bytes (with the rest
unread, so the kernel resets it) for ``hangup`` seconds from its first connection, then reads everything: the receiver of
issue 16 ("closes every connection after 1 KB for 20 s, then a good one"), scaled to seconds.
:class:`HangUpProxy` does the same in front of a real receiver (rsyslog's imrelp), relaying
bytes both ways. :func:`tally` counts sequence-numbered lines: lost and duplicated.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass


class HangUpReceiver:
    def __init__(self, *, cut: int = 1024, hangup: float = 3.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut = cut
        self.hangup = hangup
        self.started: float | None = None
        """When the first connection came: the hang-ups last ``hangup`` seconds from then."""
        self.data: list[bytes] = []
        """Complete lines received, every connection's, in arrival order."""
        self.connections = 0
        self.cut_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def hanging_up(self) -> bool:
        if self.started is None:
            self.started = time.monotonic()
        return time.monotonic() - self.started < self.hangup

    def _serve(self) -> None:
        conns: dict[socket.socket, list] = {}  # sock -> [buffer, bytes read]
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *conns], [], [], 0.02)
            for s in ready:
                if s is self.sock:
                    c, _ = s.accept()
                    self.connections += 1
                    conns[c] = [b"", 0, self.hanging_up()]
                    continue
                state = conns[s]
                limit = self.cut - state[1] if state[2] else 65536
                try:
                    data = s.recv(max(1, min(65536, limit)))
                except ConnectionResetError:
                    data = b""
                if data:
                    state[1] += len(data)
                    *whole, state[0] = (state[0] + data).split(b"\n")
                    self.data += whole
                if not data or (state[2] and state[1] >= self.cut):
                    if data:
                        self.cut_connections += 1
                    del conns[s]
                    s.close()  # with unread bytes: a reset
        for c in conns:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class HangUpProxy:
    """Relays connections to ``target``; while hanging up, cuts each one (both sides) once
    ``cut`` bytes went from the client to the receiver."""

    def __init__(self, target: int, *, cut: int = 1024, hangup: float = 3.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = target
        self.cut = cut
        self.hangup = hangup
        self.started: float | None = None
        """When the first connection came: the hang-ups last ``hangup`` seconds from then."""
        self.connections = 0
        self.cut_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # sock -> (the other end, [bytes relayed to the receiver, cutting?], from the client?)
        pairs: dict[socket.socket, tuple[socket.socket, list, bool]] = {}
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *pairs], [], [], 0.02)
            for s in ready:
                if s is self.sock:
                    client, _ = s.accept()
                    try:
                        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                    except OSError:
                        client.close()
                        continue
                    self.connections += 1
                    if self.started is None:
                        self.started = time.monotonic()
                    state = [0, time.monotonic() - self.started < self.hangup]
                    pairs[client] = (upstream, state, True)
                    pairs[upstream] = (client, state, False)
                    continue
                if s not in pairs:
                    continue
                other, state, from_client = pairs[s]
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data and state[1] and from_client:
                    data = data[:max(0, self.cut - state[0])]
                    state[0] += len(data)
                if data:
                    try:
                        other.sendall(data)
                    except OSError:
                        data = b""
                if not data or (state[1] and state[0] >= self.cut):
                    if data:
                        self.cut_connections += 1
                    for x in (s, other):
                        pairs.pop(x, None)
                        x.close()
        for s in list(pairs):
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Tally:
    sent: int
    received: int
    lost: int
    duplicated: int


def tally(lines: list[bytes | str], sent: int, *, pattern: bytes = rb"seq=(\d{6})") -> Tally:
    """Sequence numbers 0 .. sent-1 looked for in the received lines."""
    regex = re.compile(pattern)
    seen = Counter()
    for line in lines:
        if isinstance(line, str):
            line = line.encode()
        m = regex.search(line)
        if m:
            seen[int(m.group(1))] += 1
    lost = sum(1 for i in range(sent) if i not in seen)
    dup = sum(n - 1 for n in seen.values() if n > 1)
    return Tally(sent=sent, received=sum(seen.values()), lost=lost, duplicated=dup)
