"""RELP to a real rsyslog (Debian's rsyslog-relp: imrelp), through the output runner with a real
queue and board: every message confirmed before its batch is acknowledged, so nothing is lost
to a receiver that hangs up (a proxy that cuts every connection after 1 KB) or restarts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from outputs.relp import RelpError, RelpSink, _parse
from outputs.runner import Backoff
from outputs.syslog import SyslogEncoder
from tests.harness import wait_for
from tests.outputs.receivers import HangUpProxy, tally
from tests.outputs.test_runner import Rig
from tests.server.helpers import Daemon, free_port

IMRELP = Path("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so")
FILLER = "x" * 120


def rsyslog_relp(tmp: Path, *, port: int, out: Path) -> Daemon:
    """rsyslogd with imrelp on ``port``, each message's MSG appended to ``out``. The main queue
    is direct: a message is in the file before imrelp answers 200 for it."""
    if not IMRELP.exists():
        raise AssertionError("rsyslog's imrelp is missing: apt-get install rsyslog-relp "
                             "(LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup)")
    work = tmp / "rsyslog-relp"
    work.mkdir(exist_ok=True)
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}" maxMessageSize="64k")\n'
        'main_queue(queue.type="Direct")\n'
        'module(load="imrelp")\n'
        'template(name="msg" type="string" string="%msg%\\n")\n'
        f'ruleset(name="in") {{ action(type="omfile" file="{out}" template="msg") }}\n'
        f'input(type="imrelp" address="127.0.0.1" port="{port}" ruleset="in")\n')
    return Daemon(["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
                  tmp=tmp, port=port)


def relp_sink(port: int) -> RelpSink:
    return RelpSink(name=f"relp 127.0.0.1:{port}", host="127.0.0.1", port=port,
                    messages=SyslogEncoder(host="h").messages, connect_timeout=2, timeout=5)


def received(out: Path) -> list[bytes]:
    return out.read_bytes().splitlines() if out.exists() else []


def feed(rig: Rig, batches: int, per_batch: int, *, pause: float) -> None:
    for b in range(batches):
        rig.put(b + 1, *(f"seq={i:06d} {FILLER}" for i in range(b * per_batch,
                                                                (b + 1) * per_batch)))
        time.sleep(pause)


def test_frames_parse_as_librelp_writes_them():
    assert _parse(b"1 rsp 6 200 OK\n") == ((1, b"rsp", b"200 OK"), 15)
    assert _parse(b"7 rsp 0\n3 ") == ((7, b"rsp", b""), 8)
    assert _parse(b"0 serverclose 0\n") == ((0, b"serverclose", b""), 16)
    assert _parse(b"12 rsp 6 200 O") is None and _parse(b"12 rs") is None
    with pytest.raises(RelpError):
        _parse(b"1 rsp 2 OKX\n")
    with pytest.raises(RelpError):
        _parse(b"x" * 80)


def test_every_line_reaches_rsyslog_and_is_confirmed(tmp_path):
    port, out = free_port(), tmp_path / "relp.out"
    with rsyslog_relp(tmp_path, port=port, out=out):
        sink = relp_sink(port)
        rig = Rig(tmp_path, sink)
        try:
            feed(rig, 10, 300, pause=0.0)
            wait_for(lambda: rig.acked() == 10, what="10 batches confirmed")
            # Confirmed means written (direct queue): no waiting for the file.
            t = tally(received(out), 3000)
        finally:
            rig.close()
    assert (t.lost, t.duplicated) == (0, 0)
    assert sink.connects == 1 and sink.resent == 0


def test_a_receiver_that_hangs_up_loses_nothing(tmp_path):
    port, out = free_port(), tmp_path / "relp.out"
    n_batches, per = 40, 250
    with rsyslog_relp(tmp_path, port=port, out=out):
        proxy = HangUpProxy(port, cut=1024, hangup=2.0)
        sink = relp_sink(proxy.port)
        rig = Rig(tmp_path, sink, backoff=Backoff(initial=0.05, maximum=0.5))
        try:
            feed(rig, n_batches, per, pause=0.05)
            wait_for(lambda: rig.acked() == n_batches, timeout=60,
                     what="every batch confirmed")
            t = tally(received(out), n_batches * per)
        finally:
            rig.close()
            proxy.close()
    print(f"RELP through a hang-up proxy: sent {n_batches * per}, lost {t.lost}, duplicated "
          f"{t.duplicated}, {proxy.cut_connections} connections cut, resent {sink.resent}")
    assert proxy.cut_connections >= 3, "the proxy never hung up"
    assert t.lost == 0
    assert t.duplicated <= sink.resent


def test_rsyslog_restarted_mid_stream_loses_nothing(tmp_path):
    port, out = free_port(), tmp_path / "relp.out"
    n_batches, per = 60, 200
    daemon = rsyslog_relp(tmp_path, port=port, out=out)
    sink = relp_sink(port)
    rig = Rig(tmp_path, sink, backoff=Backoff(initial=0.05, maximum=0.5))
    feeder = threading.Thread(target=feed, args=(rig, n_batches, per), kwargs={"pause": 0.05})
    try:
        feeder.start()
        wait_for(lambda: rig.acked() >= 10, what="some batches confirmed")
        daemon.stop()  # SIGTERM mid-stream
        stopped_at = rig.acked()
        time.sleep(0.5)
        daemon = rsyslog_relp(tmp_path, port=port, out=out)
        feeder.join()
        wait_for(lambda: rig.acked() == n_batches, timeout=60, what="every batch confirmed")
        t = tally(received(out), n_batches * per)
    finally:
        feeder.join()
        rig.close()
        daemon.stop()
    print(f"RELP, rsyslog restarted after batch {stopped_at}: sent {n_batches * per}, lost "
          f"{t.lost}, duplicated {t.duplicated}, connections {sink.connects}")
    assert stopped_at < n_batches and sink.connects >= 2
    assert t.lost == 0


def test_nothing_listening_is_a_retry_not_a_loss(tmp_path):
    port, out = free_port(), tmp_path / "relp.out"
    sink = relp_sink(port)
    rig = Rig(tmp_path, sink, backoff=Backoff(initial=0.05, maximum=0.2))
    try:
        feed(rig, 2, 10, pause=0.0)
        wait_for(lambda: rig.runner.stats.batches_retried >= 3, what="retries")
        assert rig.acked() == 0
        with rsyslog_relp(tmp_path, port=port, out=out):
            wait_for(lambda: rig.acked() == 2, what="both batches confirmed")
            t = tally(received(out), 20)
    finally:
        rig.close()
    assert (t.lost, t.duplicated) == (0, 0) and os.path.getsize(out) > 0


def test_the_agent_over_relp_loses_nothing_to_hangups_and_a_restart(tmp_path):
    """The real agent, --tcp-framing relp, through a proxy that cuts every connection after
    1 KB for 2 s, then with rsyslog restarted mid-stream: every line in rsyslog's file."""
    from tests.harness import Agent
    from tests.outputs.test_tcp_hangups import write_lines

    port, out = free_port(), tmp_path / "relp.out"
    log = tmp_path / "app.log"
    log.touch()
    n = 30_000
    daemon = rsyslog_relp(tmp_path, port=port, out=out)
    proxy = HangUpProxy(port, cut=1024, hangup=2.0)
    try:
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning",
                   "--output-tcp", f"127.0.0.1:{proxy.port}", "--tcp-framing", "relp") as agent:
            write_lines(log, n // 2, seconds=2.0).join()
            wait_for(lambda: tally(received(out), n // 2).lost == 0, timeout=60,
                     what="the lines written during the hang-ups")
            writer = write_lines_from(log, n // 2, n, seconds=2.0)
            daemon.stop()  # mid-stream
            time.sleep(0.5)
            daemon = rsyslog_relp(tmp_path, port=port, out=out)
            writer.join()
            wait_for(lambda: tally(received(out), n).lost == 0, timeout=60,
                     what="every line in rsyslog's file")
            assert agent.stop() == 0
    finally:
        proxy.close()
        daemon.stop()
    t = tally(received(out), n)
    print(f"agent over RELP (hang-ups, then a restart): sent {n}, lost {t.lost}, duplicated "
          f"{t.duplicated}, {proxy.cut_connections} connections cut")
    assert proxy.cut_connections >= 2 and t.lost == 0


def write_lines_from(path, first: int, last: int, *, seconds: float) -> threading.Thread:
    from tests.harness import append

    def run():
        chunk = 500
        pause = seconds / ((last - first) / chunk)
        for start in range(first, last, chunk):
            append(path, "".join(f"seq={i:06d} {FILLER}\n"
                                 for i in range(start, min(last, start + chunk))).encode())
            time.sleep(pause)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_check_config_refuses_a_token_for_relp(tmp_path):
    from outputs.tcp import TcpOutputConfig

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    cfg = TcpOutputConfig(address="127.0.0.1:2514", framing="relp", tls=True,
                          auth_token_file=str(token))
    assert any(p.startswith("auth_token_file: RELP has no token") for p in cfg.problems())
    ok = TcpOutputConfig(address="127.0.0.1:2514", framing="relp")
    assert ok.problems(environ={}) == []
