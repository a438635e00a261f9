"""The agent's compiled byte loops (common/speedups/), or their pure-Python equivalents where
that module was not built (setup.py builds it when a C compiler and Python's headers are there;
the install goes on without). Both give the same results; the tests hold them together
(tests/common/test_fastpath.py, tests/outputs/test_ndjson_fast.py) and check that the compiled
one is built on Linux.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

render_lines: Callable[[bytes, bytes, int, bytes], bytes] | None
"""NDJSON of a run of plain lines (outputs/ndjson.py); None: not built, render them in Python."""
render_events: Callable[[list, int, int, tuple, bytes, int], tuple[bytes, int]] | None
"""NDJSON of events other than lines straight from their msgpack bytes (outputs/ndjson.py);
None: not built, decode and render them in Python."""
pack_span: Callable[..., bytes | None] | None
"""An exchange's SpanEvent straight to its msgpack bytes (pipeline/spans.py); None: not built,
build the SpanEvent and let msgspec encode it."""
hex_ids: Callable[[bytes, int], list[str]] | None
"""Random bytes cut into trace or span ids (common/tracecontext.py); None: not built, cut in
Python."""
http_exchange: Callable[..., object] | None
"""A kernel-paired exchange's HttpEvent, its common case compiled (inputs/ebpf/translate.py);
None: not built, made in Python."""
observe_spans: Callable[..., None] | None
"""SpanBuilder.observe's loop with its common case compiled (pipeline/spans.py); None: not
built, the loop in Python."""
ring_read: Callable[[Any, Any, int, int, list], int] | None
"""One pass over a BPF ring buffer's memory, its records as bytes (inputs/ebpf/loader.py
RingReader); None: not built, read in Python (x86) or through BCC's callbacks."""
tagged: Callable[[list, bytes], list[int]] | None
"""The indices of the events (msgpack bytes) of one tag (common.events.BatchCodec.decode_lines)."""

try:
    from common._speedups import (count_lines, hex_ids, http_exchange, observe_spans, pack_span,
                                  render_events, render_lines, ring_read, tagged)
except ImportError:  # not built
    render_lines = render_events = pack_span = observe_spans = http_exchange = hex_ids = None
    tagged = ring_read = None

    def count_lines(data: bytes | bytearray | memoryview) -> int:
        """The newlines in ``data`` (any buffer, as the compiled one takes)."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        return data.count(b"\n")

COMPILED = render_lines is not None
"""Whether the compiled module is there."""

__all__ = ["COMPILED", "count_lines", "hex_ids", "http_exchange", "observe_spans", "pack_span",
           "render_events", "render_lines", "ring_read", "tagged"]
