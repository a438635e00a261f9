"""Documented limits, shown to cost exactly what they explain and no more (issue 16).

Best-effort TCP (``--tcp-framing ndjson``) counts a batch delivered once the kernel took it; what
a receiver had received and not yet read when it dies is gone with it. The TCP sink keeps what it
wrote on a connection, up to ``replay_bytes``, and writes that window again on the next
connection when it sees the break; only lines pushed out of the window before a break can be
lost, and the sink counts them ("up to N line(s) may be lost", logged when the output stops).
Here a receiver stops reading and dies (a reset) at seeded random moments, with a small window
so that the limit is reached: the lines lost at the receiver are at most the lines the agent
reported as maybe lost.

copytruncate's own window (lines written between logrotate's copy and its truncation are in no
file) is shown in tests/inputs/test_file_durability.py: the lines lost equal those in no file on
disk, and every line that is in a file arrives."""

from __future__ import annotations

import random
import re
import time

from tests.faults.rig import LINE_BYTES, LineReceiver, Writer, agent_config, counts, seed
from tests.harness import Agent, wait_for

SEQ = re.compile(rb"seq=(\d{6})")
WINDOW = 64 * 1024
CRASHES = 5


def test_best_effort_tcp_loses_at_most_what_it_reports_when_its_receiver_dies(tmp_path):
    rng = random.Random(seed())
    log = tmp_path / "seq.log"
    log.touch()
    rx = LineReceiver()
    config = agent_config(tmp_path, log, plain=rx.port, replay_bytes=WINDOW)
    try:
        with Agent(tmp_path, "-c", str(config)) as agent:
            writer = Writer(log, rate=3000)
            for _ in range(CRASHES):
                time.sleep(rng.uniform(0.5, 1.5))
                rx.reading.clear()              # it hangs: bytes pile up in its socket buffer
                time.sleep(rng.uniform(0.2, 0.8))
                rx.crash()                      # ...and dies with them
                rx.reading.set()
            time.sleep(1.0)
            sent = writer.stop()
            received = [-1]

            def settled():  # no line more for a second
                n = len(rx.lines)
                done = n == received[0]
                received[0] = n
                return done
            wait_for(lambda: counts(plain=rx, sent=sent)["plain tcp"].lost == 0 or settled(),
                     timeout=60, interval=1.0, what="the receiver to get what it will get")
            assert agent.stop() == 0, agent.stderr()[-3000:]
        t = counts(plain=rx, sent=sent)["plain tcp"]
        got = {int(m.group(1)) for m in map(SEQ.search, rx.lines) if m}
        died = {int(m.group(1)) for m in map(SEQ.search, rx.died) if m}
        shortest = min(len(line) + 1 for line in rx.lines if SEQ.search(line))
        sender_lines = rx.sender_queued // shortest
    finally:
        rx.close()
    err = agent.stderr()
    m = re.search(r"(\d+) connection\(s\) broken by the receiver: (\d+) line\(s\) resent .*"
                  r"up to (\d+) line\(s\) may be lost", err)
    assert m, err[-3000:]
    broken, resent, maybe_lost = map(int, m.groups())
    lost = set(range(sent)) - got
    print(f"best-effort TCP, receiver died {CRASHES} times with unread bytes, window "
          f"{WINDOW >> 10} KiB (~{WINDOW // LINE_BYTES} lines): sent {sent}, lost {t.lost}, "
          f"{len(died)} lines died in the receiver's buffers, {len(died & got)} of them resent, "
          f"{rx.sender_queued} bytes (<= {sender_lines} lines) in the agent's Send-Q at the "
          f"resets, {len(lost - died)} lost of those; "
          f"duplicated {t.duplicated}; the agent reported {broken} broken connections, "
          f"{resent} lines resent, up to {maybe_lost} maybe lost")
    assert rx.crashes == CRASHES and broken >= 1
    # Every line lost is one a broken connection held: the receiver took it and died with it,
    # or the agent's kernel still had it queued (Send-Q) when the reset came; none is lost in
    # the agent. And the agent's own count covers them (it counts, conservatively, every line
    # of a broken connection that had left the window).
    assert len(lost) == t.lost
    assert len(lost - died) <= sender_lines, (len(lost - died), sender_lines)
    assert t.lost <= maybe_lost, (t, maybe_lost)
    assert t.duplicated <= resent, (t, resent)
