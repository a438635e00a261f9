"""The compiled byte loops (common/speedups/) give what their Python equivalents give."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, strategies as st

from common import fastpath


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built by setup.py on Linux")
def test_the_compiled_module_is_built_by_the_setup():
    # scripts/setup installs gcc and Python's headers: on Linux the compiled loops must be there,
    # or the throughput figures in docs/benchmarks.md are not what users get.
    assert fastpath.COMPILED, "common/speedups/ was not built (pip install -e . needs gcc, python3-dev)"


compiled = pytest.mark.skipif(not fastpath.COMPILED, reason="common._speedups not built: "
                              "the Python count would be compared with itself")


@compiled
@given(st.binary(max_size=5000) | st.lists(st.sampled_from([b"\n", b"ab", b"\n\n", b"x" * 40]))
       .map(b"".join))
def test_count_lines_is_the_count_of_newlines(data):
    assert fastpath.count_lines(data) == data.count(b"\n")
    assert fastpath.count_lines(bytearray(data)) == data.count(b"\n")
    assert fastpath.count_lines(memoryview(data)) == data.count(b"\n")


@compiled
def test_count_lines_of_a_large_buffer():
    data = (b"x" * 174 + b"\n") * 20_000 + b"tail without newline"
    assert fastpath.count_lines(data) == 20_000
