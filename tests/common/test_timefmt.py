"""The one RFC 3339 formatter: exact text, read back by the file input's parser to the same
nanosecond, and no other formatter left in the code."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from common.timefmt import rfc3339_ns
from inputs.file.formats import parse_rfc3339_ns

ROOT = Path(__file__).resolve().parent.parent.parent
LAST_NS = 253402300799_999_999_999  # 9999-12-31T23:59:59.999999999Z


def test_nine_digits_in_utc():
    assert rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_ns(5) == "1970-01-01T00:00:00.000000005Z"
    assert rfc3339_ns(-1) == "1969-12-31T23:59:59.999999999Z"


@given(st.integers(min_value=0, max_value=LAST_NS))
def test_reads_back_to_the_nanosecond(ns):
    text = rfc3339_ns(ns)
    assert parse_rfc3339_ns(text.encode()) == ns
    secs = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    assert text[:19] == secs.strftime("%Y-%m-%dT%H:%M:%S")


@given(st.lists(st.integers(min_value=-2 * 10**9, max_value=3 * 10**9), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=LAST_NS - 10**10))
def test_the_last_second_kept_never_shows_in_another(deltas, base):
    # Runs of times within a second (the kept text) and across seconds, back and forth.
    for ns in (base + d for d in deltas):
        secs = ns // 1_000_000_000
        expect = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert rfc3339_ns(ns) == f"{expect}.{ns % 1_000_000_000:09d}Z"


def test_no_other_rfc3339_formatter():
    # Records, OTLP logs and metrics read back, the server's arrival stamps and ETW: all use
    # common.timefmt.
    others = []
    for pkg in ("agent", "inputs", "pipeline", "outputs", "common", "server"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path != ROOT / "common" / "timefmt.py" and "%Y-%m-%dT" in path.read_text():
                others.append(str(path.relative_to(ROOT)))
    assert not others, others
