"""W3C Trace Context: the ``traceparent`` and ``tracestate`` headers of a captured request, and
new trace and span ids.

The eBPF input captures a bounded prefix of each request (``http_payload_bytes``): its request
line and as many header lines as fit. ``find_headers`` looks for the two headers anywhere in that
prefix (any case, any position among the headers); a header whose line the bound cuts is not
taken (a cut id is no id), and ``cut`` tells that the headers went on past the bound, so that a
span without a traceparent can say its context may have been missed.
"""

from __future__ import annotations

import os
import random
import re
from typing import NamedTuple

from common.fastpath import hex_ids

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_TRACESTATE = 512
"""The spec's limit on what a vendor must propagate of tracestate (characters)."""


class Found(NamedTuple):
    traceparent: str
    tracestate: str
    cut: bool
    """The captured bytes ended inside the request's headers."""


class Parent(NamedTuple):
    trace_id: str
    span_id: str
    sampled: bool


_NONE = Found("", "", False)
_CUT = Found("", "", True)


def find_headers(request: bytes) -> Found:
    """``traceparent`` and ``tracestate`` among the header lines of a request's captured bytes."""
    end = request.find(b"\r\n\r\n")
    cut = end < 0
    head = request if cut else request[:end + 2]
    low = head.lower()
    if b"\ntrace" not in low:  # neither header: most requests
        return _CUT if cut else _NONE
    return Found(_value(head, low, b"\ntraceparent:"), _value(head, low, b"\ntracestate:")[
        :MAX_TRACESTATE], cut)


def _value(head: bytes, low: bytes, name: bytes) -> str:
    i = low.find(name)
    if i < 0:
        return ""
    j = head.find(b"\r\n", i + len(name))
    if j < 0:
        return ""  # the bound cut this line: its value is not whole
    return head[i + len(name):j].strip(b" \t").decode("ascii", "replace")


def parse_traceparent(value: str) -> Parent | None:
    """The parent a valid ``traceparent`` names; None for anything the spec says to ignore
    (version ff, all-zero ids, wrong lengths or characters, extra fields in version 00)."""
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and rest:
        return None
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1))


_random = random.Random(os.urandom(32))
"""Ids need to be unique, not secret: a PRNG seeded from the OS (as OpenTelemetry's SDK does),
a few hundred nanoseconds instead of a getrandom() call each; seeded again in every forked child
(a restarted pipeline must not draw its predecessor's ids)."""
_POOL = 256
"""Ids are drawn this many at a time (random bytes cut in pieces, as hex)."""
_span_ids: list[str] = []
_trace_ids: list[str] = []


def _reseed() -> None:
    _random.seed(os.urandom(32))
    _span_ids.clear()
    _trace_ids.clear()


if hasattr(os, "register_at_fork"):  # POSIX; Windows children are spawned, not forked
    os.register_at_fork(after_in_child=_reseed)


def _draw(pool: list[str], digits: int) -> None:
    raw = _random.randbytes(_POOL * digits // 2)
    if hex_ids is not None:  # compiled: the same ids, ~15 ns each rather than ~100
        pool += hex_ids(raw, digits // 2)
        return
    text = raw.hex()
    zero = "0" * digits  # not a valid id (W3C): never handed out
    pool.extend(x for x in (text[i:i + digits] for i in range(0, len(text), digits))
                if x != zero)


def new_trace_id() -> str:
    """32 lower-case hex digits, never all zero."""
    while True:  # pop or draw: safe however threads interleave
        try:
            return _trace_ids.pop()
        except IndexError:
            _draw(_trace_ids, 32)


def new_span_id() -> str:
    """16 lower-case hex digits, never all zero."""
    while True:  # pop or draw: safe however threads interleave
        try:
            return _span_ids.pop()
        except IndexError:
            _draw(_span_ids, 16)
