"""The eBPF input reads its ring buffers less often while nothing comes (a quiet host costs
fewer wake-ups) and at once at its short interval again when records come: the pace alone, the
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
    assert [pace.after(False) for _ in range(6)] == [0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    assert pace.after(True) == 0.02
    assert pace.after(False) == 0.04
    assert PollPace(0.5, 0.1).after(False) == 0.5  # never below the busy interval


def test_an_idle_interval_shorter_than_the_poll_interval_is_refused():
    cfg = EbpfInputConfig(poll_interval=0.1, idle_poll_interval=0.05)
    assert cfg.problems() == ["idle_poll_interval: 0.05 is shorter than poll_interval (0.1)"]
    assert EbpfInputConfig().problems() == []


@needs_ebpf
def test_the_live_input_slows_down_when_quiet_and_takes_the_next_event_at_once(live_input):
    li = live_input(probes=["process"], idle_poll_interval=0.3)
    paces: list[tuple[bool, float]] = []
    after = li.runner.pace.after

    def recorded(took: bool) -> float:
        paces.append((took, after(took)))
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
    assert (True, 0.02) in later, later  # the read that took it: back to the short interval
