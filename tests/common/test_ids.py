"""Trace and span ids: W3C's form (lower-case hex, 32 and 16 digits, never all zero), unique,
and a forked child (a restarted pipeline) never hands out its parent's ids, even those the
parent had drawn and not used yet."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings, strategies as st

from common import tracecontext
from common.fastpath import hex_ids
from common.tracecontext import new_span_id, new_trace_id


def test_ids_have_the_w3c_form_and_do_not_repeat():
    spans = [new_span_id() for _ in range(20_000)]
    traces = [new_trace_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) for s in spans)
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in traces)
    assert len(set(spans)) == len(spans) and len(set(traces)) == len(traces)


def test_an_all_zero_id_is_never_handed_out(monkeypatch):
    tracecontext._span_ids.clear()
    draws = iter([bytes(8 * tracecontext._POOL), b"\x00" * 8 + b"\x01" * 8 * 255])
    monkeypatch.setattr(tracecontext._random, "randbytes", lambda n: next(draws))
    got = [new_span_id() for _ in range(255)]
    assert set(got) == {"01" * 8}  # the first draw (all zero) gave nothing, the second 255
    tracecontext._span_ids.clear()


def test_a_forked_child_draws_other_ids_than_its_parent():
    new_span_id()  # the parent has a pool drawn and not used up
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(w, " ".join([new_span_id() for _ in range(300)] + [new_trace_id()]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read().split()
    os.waitpid(pid, 0)
    parent = [new_span_id() for _ in range(300)] + [new_trace_id()]
    assert len(child) == 301 and not set(child) & set(parent)


@pytest.mark.skipif(hex_ids is None, reason="common._speedups not built: ids are cut in Python "
                    "(tests/common/test_fastpath.py fails)")
@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300) | st.lists(st.sampled_from([b"\0" * 8, b"\0" * 7 + b"\1",
                                                               b"\xff" * 8]), max_size=40)
       .map(b"".join), size=st.sampled_from([8, 16]))
def test_compiled_ids_are_the_python_cut(raw, size):
    """The same ids from the same random bytes with the compiled cut as without it."""
    got = []
    for cut in (hex_ids, None):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tracecontext, "hex_ids", cut)
            mp.setattr(tracecontext._random, "randbytes", lambda n: raw)
            pool: list[str] = []
            tracecontext._draw(pool, size * 2)
            got.append(pool)
    assert got[0] == got[1]
