"""Record ids: the agent id kept in the state directory, file identities, ids in every output."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from common.events import ConnEvent, HttpEvent, LogEvent, LossEvent, ProcessEvent, SpanEvent
from common.identity import (IdentityError, agent_id, event_id, event_seq, file_id,
                             load_identity, position_of, source_of)
from outputs.ndjson import Renderer, line_records
from outputs.records import line_run
from pipeline.enrich import Enricher
from pipeline.proctable import ProcessTable
from pipeline.runner import number_events
from pipeline.writers import WriterCache


def log_records(ev, host, agent=""):
    return line_records(line_run(ev, agent), host)


def _make(state_dir: str, out) -> None:
    out.put(agent_id(state_dir))


def test_agent_id_is_made_once_and_kept(tmp_path):
    first = agent_id(str(tmp_path / "state"))
    assert len(first) == 16 and int(first, 16) >= 0
    assert agent_id(str(tmp_path / "state")) == first
    assert load_identity(str(tmp_path / "state")).agent == first
    assert load_identity(str(tmp_path / "state")).session != load_identity(
        str(tmp_path / "state")).session
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["agent-id"]


def test_agents_starting_at_once_agree_on_one_id(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(str(tmp_path / "s"), out)) for _ in range(8)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=10) for _ in procs}
    for p in procs:
        p.join()
    assert len(ids) == 1


def test_a_damaged_agent_id_is_a_clear_error(tmp_path):
    (tmp_path / "agent-id").write_text("not an id\n")
    with pytest.raises(IdentityError, match="16 hex digits"):
        agent_id(str(tmp_path))
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(IdentityError):
                agent_id(str(tmp_path / "sub"))
    finally:
        os.chmod(tmp_path, 0o700)


def test_file_identity_covers_device_inode_and_first_line():
    a = file_id(1, 2, b"first line\nsecond")
    assert a == file_id(1, 2, b"first line\nsecond and more bytes")  # grows: same file
    assert a != file_id(1, 3, b"first line\n")  # another inode
    assert a != file_id(1, 2, b"other first line\n")  # truncated and written again
    assert file_id(1, 2, b"x" * 5000) == file_id(1, 2, b"x" * 1024 + b"y")


def _ev(data: bytes, offset: int = 0, **kw) -> LogEvent:
    return LogEvent(path="/l", dev=1, ino=2, offset=offset, data=data,
                    lines=data.count(b"\n") or 1, read_ns=0, fid=0xABC, **kw)


def test_line_ids_are_agent_file_and_offset_whatever_the_run():
    whole = log_records(_ev(b"aa\nbbbb\nc\n", 100), "h", "0123456789abcdef")
    assert [r.id for r in whole] == [f"0123456789abcdef.0000000000000abc.{o}"
                                     for o in (100, 103, 108)]
    # the same lines cut into other runs (a replay) get the same ids
    split = log_records(_ev(b"aa\n", 100), "h", "0123456789abcdef") + \
        log_records(_ev(b"bbbb\nc\n", 103), "h", "0123456789abcdef")
    assert [r.id for r in split] == [r.id for r in whole]
    bad = log_records(_ev(b"\xff\nok\n", 7), "h", "0123456789abcdef")
    assert [position_of(r.id) for r in bad] == [7, 9]
    assert source_of(bad[0].id) == "0123456789abcdef.0000000000000abc"
    assert log_records(_ev(b"x\n"), "h")[0].id == ""  # no agent id: no id


def test_events_get_ids_from_input_message_and_place():
    evs = [ProcessEvent(kind="exec", time_ns=1, pid=5), _ev(b"x\n"),
           ProcessEvent(kind="exit", time_ns=2, pid=5)]
    numbered = number_events(evs, 2, 41)
    assert numbered[1] is evs[1]
    assert [e.seq for e in (numbered[0], numbered[2])] == [event_seq(2, 41, 0),
                                                            event_seq(2, 41, 2)]
    assert number_events(evs, 2, 41) == numbered  # a replayed message: the same numbers
    rid = event_id("a" * 16, "s1", numbered[2].seq)
    assert source_of(rid) == "aaaaaaaaaaaaaaaa.s1-2"
    assert position_of(rid) > position_of(event_id("a" * 16, "s1", numbered[0].seq))


def test_ndjson_carries_the_id(tmp_path):
    ident = load_identity(str(tmp_path))
    out = Renderer(fmt="ndjson", host="h", identity=ident).render(
        [_ev(b"one\n"), number_events([ProcessEvent(kind="exec", time_ns=1, pid=5)], 0, 3)[0]])
    line, proc = [json.loads(x) for x in out.splitlines()]
    assert line["id"] == f"{ident.agent}.0000000000000abc.0"
    assert proc["id"] == f"{ident.agent}.{ident.session}-0.{event_seq(0, 3, 0)}"
    assert "seq" not in proc


def test_a_replay_gives_every_line_the_same_id(tmp_path):
    """The real agent, twice on one state directory: the second run reads the file again (its
    checkpoints removed, as if they had not been written before a kill -9); every line has the
    id it had, made of the agent id in the state directory, the file's identity and the
    line's offset."""
    from tests.harness import Agent

    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(500)) + b"x" * 3000 + b"\n")
    state = tmp_path / "state"
    runs = []
    for n in range(2):
        for f in state.glob("file-*"):
            f.unlink()
        (tmp_path / f"run{n}").mkdir()
        with Agent(tmp_path / f"run{n}", "--input-file", str(log), "--from-beginning",
                   "--max-line-bytes", "1024", state_dir=state) as agent:
            agent.wait_records(503)
            assert agent.stop() == 0
        runs.append({r["offset"]: r["id"] for r in agent.records()})
    assert runs[0] == runs[1] and len(runs[0]) == 503  # 500 lines and a line in 3 pieces
    agent_id = (state / "agent-id").read_text().strip()
    assert {i.rsplit(".", 2)[0] for i in runs[0].values()} == {agent_id}
    assert all(i.endswith(f".{off}") for off, i in runs[0].items())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_a_read_only_state_dir_cannot_keep_an_id_and_says_so(tmp_path):
    """As in a container with a read-only root: IdentityNotKept, which the agent turns into a
    warning and an id of this run only (agent/cli.py), instead of refusing to start."""
    import subprocess

    from common.identity import IdentityNotKept, ephemeral_identity

    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        with pytest.raises(IdentityNotKept, match="Read-only file system"):
            agent_id(str(ro))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    a, b = ephemeral_identity(), ephemeral_identity()
    assert a.agent != b.agent and len(a.agent) == 16 and int(a.agent, 16) >= 0


def test_enrichment_numbers_events_as_number_events_does():
    # The pipeline numbers events in the copy enrichment makes of them (one copy, not two):
    # the same seqs, a process where the table has one, a log run and a numbered event as they
    # were.
    table = ProcessTable()
    table.rundown()
    enricher = Enricher(table, WriterCache(refresh=1.0))
    me = os.getpid()
    evs = [HttpEvent(time_ns=1, pid=me, tid=me, comm="py", fd=3, direction="server",
                     method="GET", path="/"),
           _ev(b"x\n"),
           ConnEvent(kind="accept", time_ns=2, pid=2**22 + 7),  # no such process
           LossEvent(time_ns=3, source="input ebpf", what="ring buffer", count=1),
           ProcessEvent(kind="exec", time_ns=4, pid=5, seq=99),  # numbered already
           SpanEvent(time_ns=5, end_ns=6, trace_id="a" * 32, span_id="b" * 16)]
    enriched = enricher.enrich(evs, number=(2, 41))
    numbered = number_events(evs, 2, 41)
    assert [getattr(e, "seq", None) for e in enriched] == \
        [getattr(e, "seq", None) for e in numbered] == \
        [event_seq(2, 41, 0), None, event_seq(2, 41, 2), event_seq(2, 41, 3), 99, None]
    assert enriched[0].process is not None and enriched[0].process.pid == me
    assert enriched[2].process is None
    assert enriched[1] is evs[1] and enriched[5] is evs[5]
    assert [e.seq for e in enricher.enrich(evs[:1])] == [0]  # no message seq: not numbered
