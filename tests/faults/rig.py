"""The fault suite's rig: the real agent with small queues and fast restarts, shipping
sequence-numbered lines to real receivers (``log-shuttle server`` over acknowledged TCP and OTLP
gRPC, and a plain NDJSON TCP reader for best-effort TCP), plus the figures the tests check: lines
lost and duplicated at each receiver (``tests/outputs/receivers.tally``), and the agent's memory
(PSS summed over its processes, from /proc, so that the shared-memory queues count once)."""

from __future__ import annotations

import fcntl
import os
import random
import select
import socket
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from tests.harness import append, wait_for
from tests.outputs.receivers import Tally, tally
from tests.server.helpers import Server

MiB = 1024 * 1024
QUEUE_BYTES = 1 * MiB
"""queue.input_bytes and queue.output_bytes: the smallest the agent takes."""
BATCH_BYTES = 128 * 1024
"""pipeline.batch.max_bytes; the file input sends messages of SEND_BYTES."""
SEND_BYTES = 64 * 1024
PAD = "x" * 200
LINE_BYTES = len(f"seq=000000 {PAD}\n")


def seed() -> int:
    """The run's seed: LOG_SHUTTLE_FAULT_SEED, else a fresh one (printed, to replay a run)."""
    value = int(os.environ.get("LOG_SHUTTLE_FAULT_SEED") or random.randrange(1 << 32))
    print(f"\nfault seed {value} (LOG_SHUTTLE_FAULT_SEED={value} to replay)")
    return value


def agent_config(tmp: Path, log: Path, *, acked: int | None = None, grpc: int | None = None,
                 plain: int | None = None, replay_bytes: int = 8 * MiB) -> Path:
    """A configuration: one file input, the outputs asked for, queues of QUEUE_BYTES, batches of
    BATCH_BYTES, children restarted within 0.5 s and outputs retrying within 0.5 s."""
    text = (f"[agent]\nrestart_backoff = 0.1\nrestart_backoff_max = 0.5\n"
            f"[queue]\ninput_bytes = {QUEUE_BYTES}\noutput_bytes = {QUEUE_BYTES}\n"
            f"[pipeline.batch]\nmax_bytes = {BATCH_BYTES}\n"
            f"[[inputs.file]]\npaths = [\"{log}\"]\nfrom_beginning = true\n"
            f"send_bytes = {SEND_BYTES}\nread_bytes = {SEND_BYTES}\nmax_line_bytes = 4096\n"
            f"checkpoint_interval = 0.2\n")
    if acked:
        text += (f"[[outputs.tcp]]\nname = \"acked\"\naddress = \"127.0.0.1:{acked}\"\n"
                 f"framing = \"ndjson-acked\"\nbackoff_max = 0.5\n")
    if plain:
        text += (f"[[outputs.tcp]]\nname = \"plain\"\naddress = \"127.0.0.1:{plain}\"\n"
                 f"backoff_max = 0.5\nreplay_bytes = {replay_bytes}\n")
    if grpc:
        text += (f"[[outputs.grpc]]\naddress = \"127.0.0.1:{grpc}\"\ninsecure = true\n"
                 f"backoff_max = 0.5\n")
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


class Writer:
    """Appends ``seq=NNNNNN <pad>`` lines to ``path`` from a thread, ``rate`` lines a second,
    until stopped (or ``total`` lines)."""

    def __init__(self, path: Path, *, rate: int, total: int | None = None,
                 pad: str = PAD, prefix: str = "seq") -> None:
        self.path = path
        self.prefix = prefix
        self.pad = pad
        self.rate = rate
        self.total = total
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = max(1, self.rate // 20)
        while not self._stop.is_set() and (self.total is None or self.written < self.total):
            n = chunk if self.total is None else min(chunk, self.total - self.written)
            first = self.written
            append(self.path, "".join(f"{self.prefix}={i:06d} {self.pad}\n"
                                      for i in range(first, first + n)).encode())
            self.written += n
            time.sleep(n / self.rate)

    def join(self) -> int:
        self._thread.join()
        return self.written

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.written


class LineReceiver:
    """A plain TCP receiver of newline-delimited lines (best-effort NDJSON's peer). It accepts
    at once; while ``reading`` is clear it reads nothing (the agent's writes fill the socket
    buffers and then block)."""

    def __init__(self, *, reading: bool = True) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        self.connections = 0
        self.reading = threading.Event()
        if reading:
            self.reading.set()
        self.crashes = 0
        self.sender_queued = 0
        """Bytes the agent's kernel still held for a crashed connection (its Send-Q, from ss):
        written, not yet taken by the receiver, discarded by the reset."""
        self.died: list[bytes] = []
        """Lines a crash destroyed: received by the kernel, not yet read (the socket buffer)."""
        self._crash = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def crash(self) -> None:
        """Drop every connection as a receiver that dies does: a reset, whatever it had
        received and not read lost with it (the listener stays)."""
        self._crash.set()
        wait_for(lambda: not self._crash.is_set(), what="the receiver to crash")

    def _send_q(self) -> int:
        """Bytes queued in the kernel by the senders connected to this receiver (ss Send-Q)."""
        ss = subprocess.run(["ss", "-tnH", "state", "established", f"dport = :{self.port}"],
                            capture_output=True, text=True, check=True)
        return sum(int(line.split()[1]) for line in ss.stdout.splitlines() if line.strip())

    def _serve(self) -> None:
        conns: dict[socket.socket, bytes] = {}
        while not self._stop.is_set():
            if self._crash.is_set():
                # the agent's Send-Q before and after the receiver's buffers are looked at:
                # bytes that move between the two are counted at least once
                queued = self._send_q()
                for c, partial in conns.items():
                    unread = struct.unpack("i", fcntl.ioctl(c, termios.FIONREAD,
                                                            b"\0\0\0\0"))[0]
                    data = c.recv(unread, socket.MSG_PEEK) if unread else b""
                    self.died += (partial + data).split(b"\n")
                    queued = max(queued, self._send_q())
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                conns.clear()
                self.sender_queued += queued
                self.crashes += 1
                self._crash.clear()
            watch = [self.sock, *conns] if self.reading.is_set() else [self.sock]
            ready, _, _ = select.select(watch, [], [], 0.02)
            for s in ready:
                if s is self.sock:
                    c, _ = s.accept()
                    self.connections += 1
                    conns[c] = b""
                    continue
                try:
                    data = s.recv(1 << 20)
                except OSError:
                    data = b""
                if data:
                    *whole, conns[s] = (conns[s] + data).split(b"\n")
                    self.lines += whole
                else:
                    del conns[s]
                    s.close()
        for c in conns:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def server_lines(server: Server) -> list[str]:
    return [r.get("line", "") for r in server.records()]


def counts(*, acked: Server | None = None, grpc: Server | None = None,
           plain: LineReceiver | None = None, sent: int) -> dict[str, Tally]:
    """Lost and duplicated at each receiver (one server per protocol, so that nothing needs to
    tell their records apart)."""
    out = {}
    if acked is not None:
        out["acked tcp"] = tally(server_lines(acked), sent)
    if grpc is not None:
        out["grpc"] = tally(server_lines(grpc), sent)
    if plain is not None:
        out["plain tcp"] = tally(list(plain.lines), sent)
    return out


def group_pids(leader: int) -> list[int]:
    """The supervisor and its descendants."""
    pids, todo = [], [leader]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def memory_kib(leader: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB summed over the agent's processes (smaps_rollup)."""
    pss = rss = 0
    for p in group_pids(leader):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss
