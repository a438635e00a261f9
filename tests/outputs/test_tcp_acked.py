"""The TCP output's acknowledged mode (``--tcp-framing ndjson-acked``) against a real
``log-shuttle server``: a batch counts as delivered only once the server wrote and synced it,
so a receiver that hangs up (a proxy cutting every connection after 1 KB) or a server killed
with SIGKILL mid-stream loses no line."""

from __future__ import annotations

import signal
import time

from outputs.acked import AckedSink
from outputs.ndjson import Renderer
from outputs.runner import Backoff
from tests.harness import Agent, wait_for
from tests.outputs.receivers import HangUpProxy, tally
from tests.outputs.test_runner import Receiver, Rig
from tests.outputs.test_tcp_hangups import write_lines
from tests.server.helpers import Server, free_port

N = 30_000


def lines_at(server: Server) -> list[str]:
    return [r.get("line", "") for r in server.records()]


def test_hang_ups_lose_nothing_with_acknowledgements(tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    with Server(tmp_path, "--insecure", tcp_port=port) as server:
        proxy = HangUpProxy(port, cut=1024, hangup=2.0)
        try:
            with Agent(tmp_path, "--input-file", str(log), "--from-beginning", "--output-tcp",
                       f"127.0.0.1:{proxy.port}", "--tcp-framing", "ndjson-acked") as agent:
                write_lines(log, N, seconds=3.0).join()
                wait_for(lambda: tally(lines_at(server), N).lost == 0, timeout=60,
                         what="every line at the server")
                assert agent.stop() == 0
        finally:
            proxy.close()
        t = tally(lines_at(server), N)
    stats = server.stats()  # logged when it stopped
    print(f"acknowledged TCP through a hang-up proxy: sent {N}, lost {t.lost}, duplicated "
          f"{t.duplicated}, {proxy.cut_connections} connections cut")
    assert proxy.cut_connections >= 2 and t.lost == 0
    assert stats["tcp_acked_connections"] >= 2 and stats["tcp_acked_batches"] >= 1


def test_a_server_killed_mid_stream_loses_nothing(tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    server = Server(tmp_path, "--insecure", tcp_port=port)
    try:
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning", "--output-tcp",
                   f"127.0.0.1:{port}", "--tcp-framing", "ndjson-acked") as agent:
            writer = write_lines(log, N, seconds=3.0)
            wait_for(lambda: len(server.records()) >= 3000, what="some lines at the server")
            server.proc.send_signal(signal.SIGKILL)  # no drain: only what it synced is there
            server.proc.wait()
            time.sleep(0.5)
            server.start()
            writer.join()
            wait_for(lambda: tally(lines_at(server), N).lost == 0, timeout=60,
                     what="every line at the restarted server")
            assert agent.stop() == 0
        t = tally(lines_at(server), N)
    finally:
        server.stop()
    print(f"acknowledged TCP, server SIGKILLed mid-stream: sent {N}, lost {t.lost}, "
          f"duplicated {t.duplicated}")
    assert t.lost == 0


def test_a_receiver_that_does_not_speak_the_mode_is_never_acknowledged(tmp_path):
    rx = Receiver()  # reads, never answers
    sink = AckedSink(name="acked", host="127.0.0.1", port=rx.port,
                     encode=Renderer(fmt="ndjson", host="h").render, connect_timeout=0.3,
                     write_timeout=0.3)
    rig = Rig(tmp_path, sink, backoff=Backoff(initial=0.02, maximum=0.05))
    try:
        rig.put(1, "seq=000000 x")
        wait_for(lambda: rig.runner.stats.batches_retried >= 3, what="retries")
        assert rig.acked() == 0 and rig.committed() == 0
        assert set(rx.lines) == {b"ACKED 1"} and sink.connects >= 3  # the hello, never the batch
    finally:
        rig.producer.close()
        rig.ctx.stop.set()
        rx.close()
        rig.thread.join(timeout=5)
        rig.queue.destroy()
        rig.board.destroy()
