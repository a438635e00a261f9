"""common.cpu.relax: the CPU offered to others once a slice has passed, and the loops that work
through a batch offering it between pieces."""

from __future__ import annotations

from common import cpu
from common.events import HttpEvent
from outputs import ndjson


def test_relax_yields_once_a_slice_has_passed(monkeypatch):
    now = [10**12]
    yields = []
    monkeypatch.setattr(cpu, "_clock", lambda: now[0])
    monkeypatch.setattr(cpu, "_yield", lambda: yields.append(now[0]))
    monkeypatch.setattr(cpu, "_last", 0)
    cpu.relax()
    assert len(yields) == 1  # long since the last one
    for _ in range(10):
        now[0] += cpu.SLICE_NS // 10 - 1
        cpu.relax()
    assert len(yields) == 1  # not a whole slice yet
    now[0] += 10
    cpu.relax()
    assert len(yields) == 2


def test_rendering_a_large_batch_offers_the_cpu_between_pieces(monkeypatch):
    calls = []
    monkeypatch.setattr(ndjson, "relax", lambda: calls.append(1))
    events = [HttpEvent(time_ns=i, pid=1, tid=1, comm="x", fd=3, direction="server",
                        method="GET", path=f"/{i}") for i in range(1000)]
    out = ndjson.Renderer(fmt="ndjson", host="h").render(events)
    assert out.count(b"\n") == 1000 and b'"path":"/999"' in out
    assert len(calls) >= 1000 // ndjson.RENDER_PIECE
