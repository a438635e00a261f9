"""The eBPF input reads its ring buffers about READ_RECORDS records at a time while they come
(between its poll interval and its batch's), less and less often while nothing comes (a quiet
host costs fewer wake-ups), and sends a batch at the read before it is due: the pace alone, the
configuration's check, and the real input with real probes."""

from __future__ import annotations

import subprocess
import time

from inputs.ebpf.config import EbpfInputConfig
from inputs.ebpf.runner import PollPace
from common.events import ProcessEvent
from tests.inputs.ebpf.conftest import needs_ebpf


def test_the_wait_doubles_while_reads_find_nothing_and_drops_back_when_records_come():
    pace = PollPace(0.02, 0.25)
    now = 0.0
    waits = []
    for _ in range(6):
        waits.append(pace.after(0, now))
        now += waits[-1]
    assert waits == [0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    assert pace.after(1, now) == 0.02  # longest: the busy interval when not given
    assert pace.after(0, now + 0.02) == 0.04
    assert PollPace(0.5, 0.1).after(0, 0.0) == 0.5  # never below the busy interval


def test_while_records_come_a_read_takes_about_per_read_of_them():
    pace = PollPace(0.02, 0.25, longest=0.1, per_read=128)
    pace.after(0, 0.0)
    # 10,000 records a second: 12.8 ms' worth is under the busy interval.
    assert pace.after(200, 0.02) == 0.02
    # 2,000 a second: 64 ms between reads.
    assert abs(pace.after(40, 0.04) - 0.064) < 1e-9
    # 500 a second (a budget): the batch's interval, no longer.
    assert pace.after(50, 0.104) == 0.1
    # One record after a quiet spell: no faster than that either.
    pace.after(0, 0.204)
    assert pace.after(1, 0.6) == 0.1
    # A burst: back to the busy interval at once.
    assert pace.after(5000, 0.7) == 0.02


def test_an_idle_interval_shorter_than_the_poll_interval_is_refused():
    cfg = EbpfInputConfig(poll_interval=0.1, idle_poll_interval=0.05)
    assert cfg.problems() == ["idle_poll_interval: 0.05 is shorter than poll_interval (0.1)"]
    assert EbpfInputConfig().problems() == []


@needs_ebpf
def test_the_live_input_slows_down_when_quiet_and_takes_the_next_event_at_once(live_input):
    li = live_input(probes=["process"], idle_poll_interval=0.3)
    paces: list[tuple[bool, float]] = []
    after = li.runner.pace.after

    def recorded(took: int, now: float) -> float:
        paces.append((bool(took), after(took, now)))
        return paces[-1][1]

    li.runner.pace.after = recorded
    # Other processes of the host make process events now and then: wait for a quiet spell
    # long enough to reach the idle interval.
    deadline = time.monotonic() + 60
    while not any(p == (False, 0.3) for p in paces[-3:]):
        assert time.monotonic() < deadline, f"never quiet for long: {paces[-20:]}"
        time.sleep(0.1)
    mark = len(paces)
    child = subprocess.run(["/bin/true", "pace-marker"], check=True)
    assert child.returncode == 0
    li.wait_for(lambda evs: any(isinstance(e, ProcessEvent) and e.kind == "exec"
                                and "pace-marker" in e.argv for e in evs), timeout=30,
                what="the exec of the marker")
    later = paces[mark:]
    # The read that took it: back to at most the batch's interval (a record or two a read).
    assert (True, li.runner.cfg.send_interval) in later, later
