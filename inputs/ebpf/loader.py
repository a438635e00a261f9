"""Loading the BPF programs with BCC, and reading what they produce.

Each probe is its own C file in bpf/ and its own BPF object, loaded with
``BPF(src_file=<probe>.c, cflags=[...])``: the cflags carry the options (ring buffer size,
HTTP payload size, the agent's own pid). BCC attaches every ``TRACEPOINT_PROBE`` as it loads.
Each object has its own ring buffer, created here before the object (its descriptor is a
cflag, ``EVENTS_FD``: the programs ask it how much is pending, to wake the reader only when
that is much; BCC's tables have no ``ringbuf_query``), and its own loss counter. ``Programs``
polls the ring buffers (epoll on their map descriptors, with a short timeout: the programs
submit without waking it) and hands back the raw bytes, read straight from the ring buffers'
memory in one pass each (``RingReader``, compiled where common/speedups/ is built;
libbpf's one-callback-per-event consumer only where neither that nor Python's loop is safe).

``bcc`` is imported here only, lazily, so that every module imports on machines without it;
its exceptions become ``LoadError`` at this boundary.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import select
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bpf
from common.errors import LogShuttleError
from common.fastpath import ring_read

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
QUIET_CFLAGS = ["-Wno-ignored-attributes", "-Wno-unused-function",
                "-Wno-visibility", "-Wno-macro-redefined"]
"""The kernel headers BCC compiles against warn about things that do not concern the probes."""


class LoadError(LogShuttleError):
    """A probe could not be compiled, loaded or attached (the message says which and why)."""


@dataclass(frozen=True, kw_only=True)
class ProgramOptions:
    http_payload_bytes: int = 256
    ring_buffer_bytes: int = 8 * 1024 * 1024
    self_pid: int = 0
    """Reads and writes of this process are never traced (the agent's own input)."""
    wakeup_fraction: int = 4
    """A submit wakes the reader when 1/this of the ring buffer is pending (else it polls)."""


HTTP_CONNS_BYTES = 16 * 1024 * 1024
"""Memory for the http probe's connection states (each holds a request's first bytes)."""


def http_conns(options: ProgramOptions) -> int:
    """Connections the http probe keeps state of: 16 MiB of them, 4,096 to 65,536."""
    # bpf/http.c struct conn_state: 8 bytes, the 88 of an exchange record's fixed part, payload
    return max(4096, min(65536, HTTP_CONNS_BYTES // (options.http_payload_bytes + 96)))


HTTP_FDS = 65536
"""Sockets the http probe follows at once (accepted or connected, not yet closed)."""
BPF_MAP_TYPE_RINGBUF = 27


def ring_bytes(options: ProgramOptions) -> int:
    return max(1, options.ring_buffer_bytes // PAGE_SIZE) * PAGE_SIZE


def cflags(options: ProgramOptions, events_fd: int = -1) -> list[str]:
    """The compiler flags a probe is built with (``events_fd``: its ring buffer's map)."""
    size = ring_bytes(options)
    return [f"-I{bpf.DIR}", f"-DEVENTS_FD={events_fd}", f"-DRINGBUF_PAGES={size // PAGE_SIZE}",
            f"-DWAKEUP_BYTES={size // max(1, options.wakeup_fraction)}",
            f"-DHTTP_PAYLOAD={options.http_payload_bytes}", f"-DSELF_PID={options.self_pid}",
            f"-DHTTP_CONNS={http_conns(options)}", f"-DHTTP_FDS={HTTP_FDS}", *QUIET_CFLAGS]


def create_ring(probe: str, size: int) -> int:
    """A BPF ring buffer map of ``size`` bytes (a power of two pages); its descriptor."""
    try:
        from bcc import libbcc
    except Exception as exc:
        raise LoadError(f"cannot import bcc: {exc}") from exc
    fd = libbcc.lib.bcc_create_map(BPF_MAP_TYPE_RINGBUF, f"ls_{probe}"[:15].encode(), 0, 0,
                                   size, 0)
    if fd < 0:
        raise LoadError(f"probe {probe}: cannot create its ring buffer of {size} bytes: "
                        f"{os.strerror(-fd) if fd < -1 else 'bpf(BPF_MAP_CREATE) failed'}")
    return fd


def source_file(probe: str) -> str:
    if probe not in bpf.PROBES:
        raise LoadError(f"unknown probe {probe!r} (probes: {', '.join(bpf.PROBES)})")
    return str(bpf.DIR / f"{probe}.c")


class _StderrTo:
    """Send fd 2 to a temporary file while BCC's compiler writes to it (C++ code, so
    sys.stderr cannot catch it). ``text`` holds what was written."""

    def __enter__(self) -> _StderrTo:
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()


def _compiler_errors(text: str) -> str:
    """The lines of the compiler's or verifier's output that say what went wrong."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return "; ".join((errors or lines[-2:])[:3]) or "no message"


def load_probe(probe: str, options: ProgramOptions, *, debug: int = 0) -> tuple[Any, str]:
    """Compile, load and attach one probe; return the BPF object and what the compiler said.
    The object's ring buffer is ``obj.ring_fd`` (``close_probe`` closes both)."""
    try:
        from bcc import BPF
    except Exception as exc:
        raise LoadError(f"cannot import bcc: {exc}") from exc
    ring_fd = create_ring(probe, ring_bytes(options))
    with _StderrTo() as err:
        try:
            obj = BPF(src_file=source_file(probe).encode(), cflags=cflags(options, ring_fd),
                      debug=debug)
        except Exception as exc:
            failure: Exception | None = exc
        else:
            failure = None
    if failure is not None:
        os.close(ring_fd)
        detail = f"{failure}: {_compiler_errors(err.text)}"
        raise LoadError(f"probe {probe}: {detail}") from failure
    obj.ring_fd = ring_fd
    return obj, err.text


def close_probe(obj: Any) -> None:
    """Detach and unload a probe, and close its ring buffer."""
    try:
        obj.cleanup()
    except Exception:  # detaching is best effort: the kernel detaches at exit anyway
        pass
    fd = getattr(obj, "ring_fd", -1)
    if fd >= 0:
        os.close(fd)
        obj.ring_fd = -1


def program_text(probe: str, options: ProgramOptions) -> str:
    """The final program of a probe as BCC compiles it: after BCC's rewriting (tracepoint
    argument structs, map calls) and with the cflags applied (BCC's DEBUG_PREPROCESSOR)."""
    from bcc import DEBUG_PREPROCESSOR  # noqa: F401 (checked by load_probe's import first)

    obj, text = load_probe(probe, options, debug=DEBUG_PREPROCESSOR)
    close_probe(obj)
    return text


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_HDR = 8
DIRECT_READ = ring_read is not None or platform.machine() in ("x86_64", "AMD64", "i686", "i386")
"""Reading a ring buffer's memory from Python's loop needs the CPU to keep loads and stores in
order (x86's TSO): Python has no acquire/release. The compiled reader orders them itself, on
any CPU. Without either, BCC's callbacks read it."""


class RingReader:
    """One BPF ring buffer read straight from its memory (libbpf's layout): a consumer page (the
    position we have read up to, ours to write), a producer page (the position the kernel has
    written up to), then the data pages, mapped twice in a row so that a record that wraps
    around is contiguous. Each record: a u32 length (bit 31: still being written; bit 30:
    discarded), a u32 the kernel uses, the data, padded to 8 bytes. One pass takes every record
    written so far, as bytes, and hands the space back at once: no callback per record."""

    def __init__(self, map_fd: int, size: int, *, compiled: bool = True) -> None:
        """compiled: read with common/speedups/ebpf.c ``ring_read`` where it is built (the same
        records: ~30 ns a record here, against ~550 in Python's loop); False: Python's loop
        (x86 only, see DIRECT_READ)."""
        self.size = size
        self.mask = size - 1
        self.compiled = compiled
        self._cons = mmap.mmap(map_fd, PAGE_SIZE, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._prod = mmap.mmap(map_fd, PAGE_SIZE + 2 * size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=PAGE_SIZE)
        except BaseException:
            self._cons.close()
            raise

    def read(self, out: list[bytes]) -> int:
        """Append every complete record to ``out``; the number appended."""
        if ring_read is not None and self.compiled:
            return ring_read(self._cons, self._prod, PAGE_SIZE, self.mask, out)
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        if cons == prod:
            return 0
        data = self._prod
        mask = self.mask
        base = PAGE_SIZE
        u32 = _U32.unpack_from
        append = out.append
        n = 0
        while cons < prod:
            off = base + (cons & mask)
            length = u32(data, off)[0]
            if length & RINGBUF_BUSY:
                break  # being written: the next pass takes it
            size = length & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
            if not length & RINGBUF_DISCARD:
                start = off + RINGBUF_HDR
                append(data[start:start + size])
                n += 1
            cons += (size + RINGBUF_HDR + 7) & ~7
        _U64.pack_into(self._cons, 0, cons)
        return n

    def close(self) -> None:
        self._prod.close()
        self._cons.close()


class CallbackReader:
    """A ring buffer read through libbpf's consumer (one ctypes callback per record): where
    reading its memory from Python is not safe (see DIRECT_READ)."""

    def __init__(self, map_fd: int) -> None:
        from bcc import libbcc

        self._lib = libbcc.lib
        self._out: list[bytes] = []
        self._cb = libbcc._RINGBUF_CB_TYPE(self._on_record)
        self._rb = self._lib.bpf_new_ringbuf(map_fd, self._cb, None)
        if not self._rb:
            raise LoadError("cannot open a ring buffer with libbpf (bpf_new_ringbuf)")

    def _on_record(self, _ctx: Any, data: int, size: int) -> int:
        self._out.append(ctypes.string_at(data, size))
        return 0

    def read(self, out: list[bytes]) -> int:
        self._out = out
        before = len(out)
        self._lib.bpf_consume_ringbuf(self._rb)
        return len(out) - before

    def close(self) -> None:
        if self._rb:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None


class Programs:
    """The loaded probes: their ring buffers, polled together, and their loss counters."""

    def __init__(self, probes: Sequence[str], options: ProgramOptions, *,
                 direct: bool = DIRECT_READ) -> None:
        self.options = options
        self.objects: dict[str, Any] = {}
        self.readers: list[RingReader | CallbackReader] = []
        self._lost_seen: dict[str, int] = {}
        self._epoll = select.epoll()
        self._extra: set[int] = set()
        """Descriptors other than the ring buffers already in the epoll set (``wait``): the
        caller's are open as long as this object (the stop signal's)."""
        size = ring_bytes(options)
        try:
            # The tcp probe is consumed last in each round: an HTTP event is then never handled
            # before the connect/accept that gave its descriptor its peer.
            # logwrite reads a public map of http's: after it.
            for probe in sorted(probes, key=lambda p: {"logwrite": 1, "tcp": 2}.get(p, 0)):
                obj, _ = load_probe(probe, options)
                self.objects[probe] = obj
                reader = RingReader(obj.ring_fd, size) if direct else CallbackReader(obj.ring_fd)
                self.readers.append(reader)
                self._epoll.register(obj.ring_fd, select.EPOLLIN)
                self._lost_seen[probe] = 0
        except BaseException:
            self.close()
            raise

    def wait(self, timeout: float, *extra_fds: int) -> None:
        """Sleep until a ring buffer wakes us (much pending), one of ``extra_fds`` is
        readable, or timeout (the programs do not wake us for each event: poll on a timer)."""
        for fd in extra_fds:
            if fd not in self._extra:
                try:
                    self._epoll.register(fd, select.EPOLLIN)
                except FileExistsError:
                    pass
                self._extra.add(fd)
        try:
            self._epoll.poll(timeout)
        except InterruptedError:
            pass

    def consume(self) -> list[bytes]:
        """Everything the ring buffers hold now (raw events), probe by probe, tcp last."""
        out: list[bytes] = []
        for reader in self.readers:
            reader.read(out)
        return out

    def lost(self) -> dict[str, int]:
        """Per probe, events its ring buffer had no room for since the last call."""
        out = {}
        for probe, obj in self.objects.items():
            total = sum(int(v) for v in obj[b"lost"][ctypes.c_int(0)])
            out[probe] = total - self._lost_seen[probe]
            self._lost_seen[probe] = total
        return out

    def set_sampling(self, one_in: int) -> None:
        """Have the http probe send 1 HTTP exchange in ``one_in`` (1: every one)."""
        obj = self.objects.get("http")
        if obj is not None:
            obj[b"sampling"][ctypes.c_int(0)] = ctypes.c_uint32(max(1, one_in))

    def exchange_counts(self) -> tuple[int, int]:
        """Since the http probe was loaded: the exchanges it paired (sent or not), and those of
        them it did not send (sampling)."""
        obj = self.objects.get("http")
        if obj is None:
            return 0, 0
        table = obj[b"exchange_counts"]
        return (sum(int(v) for v in table[ctypes.c_int(0)]),
                sum(int(v) for v in table[ctypes.c_int(1)]))

    def sampled_out(self) -> int:
        """Exchanges the http probe counted and did not send (sampling), since it was loaded."""
        return self.exchange_counts()[1]

    def follow_sockets(self, keys: Iterable[int]) -> int:
        """Tell the http probe to follow these (pid << 32 | fd) sockets (connections older than
        the agent, found in /proc); how many it took."""
        obj = self.objects.get("http")
        if obj is None:
            return 0
        table = obj[b"fds"]
        one = table.Leaf(1)
        n = 0
        for key in keys:
            try:
                table[table.Key(key)] = one
            except Exception:  # the process closed it meanwhile, or the map refused: skip it
                continue
            n += 1
        return n

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.readers.clear()
        for obj in self.objects.values():
            close_probe(obj)
        self.objects.clear()
        self._epoll.close()
