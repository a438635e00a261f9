"""Enrichment of a message's events with the process table (no agent: the table of this host)."""

from __future__ import annotations

import os

from common.events import ConnEvent, HttpEvent, ProcessEvent
from pipeline.enrich import Enricher
from pipeline.proctable import ProcessTable
from pipeline.writers import WriterCache


def http(pid: int) -> HttpEvent:
    return HttpEvent(time_ns=1, pid=pid, tid=pid, comm="py", fd=3, direction="server",
                     method="GET", path="/")


def test_a_message_s_events_look_their_process_up_once_and_again_after_a_process_event():
    table = ProcessTable()
    table.rundown()
    enricher = Enricher(table, WriterCache(refresh=1.0))
    me = os.getpid()
    before = table.lookups
    evs = [http(me), ConnEvent(kind="accept", time_ns=1, pid=me), http(me),
           ProcessEvent(kind="exit", time_ns=2, pid=me, ppid=os.getppid()),  # as the table has it
           http(me), http(2**22 + 7)]
    out = enricher.enrich(evs)
    # me once for the three before the exit, the exit's own, me again after it, the unknown pid
    assert table.lookups - before == 4
    assert [e.process.exited if e.process else None for e in out] == \
        [False, False, False, True, True, None]
    assert out[0].process is out[1].process is out[2].process  # one lookup, one info


def test_a_loss_of_events_makes_the_next_poll_a_full_one():
    from common.events import LossEvent

    table = ProcessTable(fed_by_events=True)
    table.rundown()
    table.poll(now=1.0)
    assert not table.stale
    enricher = Enricher(table, WriterCache(refresh=1.0))
    enricher.enrich([http(os.getpid())])
    assert not table.stale
    enricher.enrich([LossEvent(time_ns=1, source="input ebpf", what="ring buffer process",
                               count=3)])
    assert table.stale
