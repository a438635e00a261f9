"""The agent's compiled byte loops (common/_speedups.c), or their pure-Python equivalents where
that module was not built (setup.py builds it when a C compiler and Python's headers are there;
the install goes on without). Both give the same results; the tests hold them together
(tests/common/test_fastpath.py, tests/outputs/test_ndjson_fast.py) and check that the compiled
one is built on Linux.
"""

from __future__ import annotations

from collections.abc import Callable

render_lines: Callable[[bytes, bytes, int, bytes], bytes] | None
"""NDJSON of a run of plain lines (outputs/ndjson.py); None: not built, render them in Python."""

try:
    from common._speedups import count_lines, render_lines
except ImportError:  # not built
    render_lines = None

    def count_lines(data: bytes | bytearray | memoryview) -> int:
        """The newlines in ``data`` (any buffer, as the compiled one takes)."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        return data.count(b"\n")

COMPILED = render_lines is not None
"""Whether the compiled module is there."""

__all__ = ["COMPILED", "count_lines", "render_lines"]
