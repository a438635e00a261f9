"""Kernel-Process payloads, every manifest version, built from the manifest's layouts."""

from __future__ import annotations

import pytest

from inputs.etw import kernel_process as kp
from inputs.etw.errors import PayloadError
from tests.inputs.etw.helpers import CREATE_NS, IMAGE, sid, start_payload, stop_payload


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_process_start_every_version(version):
    ev = kp.process_event(kp.PROCESS_START, version, start_payload(version), time_ns=99)
    assert (ev.kind, ev.pid, ev.ppid, ev.source) == ("exec", 4242, 100, "etw")
    assert ev.filename == IMAGE and ev.comm == "notepad.exe"
    assert ev.start_ns == CREATE_NS and ev.time_ns == 99
    assert ev.exit_code is None


@pytest.mark.parametrize("version", [0, 1, 2])
def test_process_stop_every_version(version):
    ev = kp.process_event(kp.PROCESS_STOP, version, stop_payload(version, exit_code=0xC0000005),
                          time_ns=7)
    assert (ev.kind, ev.pid, ev.comm, ev.source) == ("exit", 4242, "notepad.exe", "etw")
    assert ev.exit_code == 0xC0000005  # NTSTATUS stays unsigned: a negative code means a signal
    assert ev.start_ns == CREATE_NS


@pytest.mark.parametrize("version, like", [(0, 2), (1, 3)])
def test_rundown_versions_share_the_start_layouts(version, like):
    ev = kp.process_event(kp.PROCESS_RUNDOWN, version, start_payload(like), time_ns=1)
    assert (ev.kind, ev.pid, ev.start_ns) == ("rundown", 4242, CREATE_NS)


def test_version_3_reads_the_fields_after_the_sid():
    fields = kp.decode(kp.PROCESS_START, 3, start_payload(3))
    assert fields["ProcessSequenceNumber"] == 77 and fields["ParentProcessSequenceNumber"] == 76
    assert fields["MandatoryLabel"] == "S-1-16-8192"
    assert fields["ImageChecksum"] == 0xABCD and fields["PackageFullName"] == ""


def test_start_and_stop_of_one_process_share_its_key_and_reuse_gets_another():
    start = kp.process_event(1, 3, start_payload(3), time_ns=1)
    stop = kp.process_event(2, 2, stop_payload(2), time_ns=2)
    assert (start.pid, start.start_ns) == (stop.pid, stop.start_ns)
    other = start_payload(3)[:12] + (int.from_bytes(start_payload(3)[12:20], "little") + 10)\
        .to_bytes(8, "little") + start_payload(3)[20:]
    reused = kp.process_event(1, 3, other, time_ns=3)
    assert reused.pid == start.pid and reused.start_ns == start.start_ns + 1000


@pytest.mark.parametrize("event_id, version, payload", [
    (1, 0, start_payload(0)[:10]),  # cut inside CreateTime
    (1, 2, start_payload(2)[:-3]),  # last string without its terminator
    (2, 1, stop_payload(1)[:40]),  # cut inside the counters
    (2, 0, stop_payload(0)[:-1]),  # ANSI name without NUL
    (1, 3, start_payload(3)[:48] + bytes([2, 1]) + start_payload(3)[50:]),  # SID revision 2
    (1, 3, b""),
    (1, 9, start_payload(3)),  # a version no manifest has
])
def test_malformed_payloads_raise_a_payload_error_that_says_where(event_id, version, payload):
    with pytest.raises(PayloadError) as info:
        kp.process_event(event_id, version, payload, time_ns=0)
    assert str(info.value)  # a message, not an IndexError


def test_utf16_string_terminator_must_be_on_a_character_boundary():
    # "\u0100A" is 00 01 41 00: a zero pair straddles the characters and must not end the string.
    payload = start_payload(0, image="\u0100A")
    assert kp.decode(1, 0, payload)["ImageName"] == "\u0100A"


def test_sid_with_many_subauthorities():
    from inputs.etw.payload import Reader
    assert Reader(sid(5, 21, 1, 2, 3, 500)).sid("x") == "S-1-5-21-1-2-3-500"
