"""Line protocol (outputs/lineproto.py): exact text for known points, and a property test against
the real InfluxDB 1.x of Debian: whatever measurement, tag keys and values, field keys and values
are written, InfluxDB parses them back unchanged (or as clean_name/clean_tag_value document, for
the few characters line protocol cannot carry)."""

from __future__ import annotations

import itertools
import urllib.error
import urllib.request

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outputs.lineproto import clean_name, clean_tag_value, line, lines
from tests.outputs.peers import Influx, needs


def test_known_lines():
    assert line("http.server.request.duration",
                {"service.name": "my app", "http.route": "/a,b=c", "empty": ""},
                {"count": 3, "sum": 0.25, "ok": True, "note": 'say "hi" \\ bye'}, 17) == (
        'http.server.request.duration,http.route=/a\\,b\\=c,service.name=my\\ app '
        'count=3i,sum=0.25,ok=true,note="say \\"hi\\" \\\\ bye" 17')
    assert line("m,x y", {"k=1": "v"}, {"f k": 1}) == "m\\,x\\ y,k\\=1=v f\\ k=1i"
    assert line("m", {}, {"nan": float("nan")}) is None
    assert line("m", {"t": "a\\"}, {"time": 1.5}) == "m,t=a/ _time=1.5"
    assert lines([("m", {}, {"v": 1}, 5), ("m", {}, {"v": float("inf")}, 6)]) == b"m v=1i 5\n"
    assert clean_name("#x", key=False) == "_#x" and clean_tag_value("a\nb\\ c") == "a b/ c"
    assert clean_name("\t\tk") == "__k" and clean_name("k\t") == "k\t"


_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
_field_value = st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False), _text)


@st.composite
def points(draw):
    tag_keys = draw(st.lists(_text, max_size=4, unique_by=lambda k: clean_name(k)))
    tags = {k: draw(_text) for k in tag_keys}
    taken = {clean_name(k) for k in tags}
    field_keys = draw(st.lists(_text.filter(lambda k: clean_name(k) not in taken),
                               min_size=1, max_size=4, unique_by=lambda k: clean_name(k)))
    fields = {k: draw(_field_value) for k in field_keys}
    return draw(_text), tags, fields


@needs("influxd")
def test_influxdb_reads_back_what_was_written(tmp_path):
    influx = Influx(tmp_path)
    numbers = itertools.count()
    try:
        @settings(max_examples=100, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])
        @given(points())
        @example(("#a\\", {"k\\": "v\\ w,x=y", "t\\=": "x\ny\r"},
                  {"time": 'q"\\', "f\\ ": 2**63 - 1, "g": -0.0}))
        @example(("m= x", {"a b": "c\\\\"}, {"s": "multi\nline \\\"", "b": False}))
        @example(("\tm", {"\tk": "\tv\x00"}, {"\t": 0, "a\x00": "\x00"}))
        def check(point):
            measurement, tags, fields = point
            db = f"p{next(numbers)}"
            influx.create(db)
            body = lines([(measurement, tags, fields, 1_000_000_007)])
            req = urllib.request.Request(f"{influx.url}/write?db={db}&precision=ns", data=body,
                                         method="POST")
            try:
                urllib.request.urlopen(req, timeout=30).read()
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{body!r}: {exc.read().decode()}") from exc
            (series,) = influx.query("SELECT * FROM /.*/ GROUP BY *", db=db)
            assert series["name"] == clean_name(measurement, key=False)
            want_tags = {clean_name(k): clean_tag_value(v) for k, v in tags.items()}
            got_tags = {k: v for k, v in series.get("tags", {}).items() if v != ""}
            assert got_tags == {k: v for k, v in want_tags.items() if v != ""}
            (row,) = series["values"]
            got = dict(zip(series["columns"], row))
            assert got.pop("time") == 1_000_000_007
            want = {clean_name(k): v for k, v in fields.items()}
            assert got.keys() == want.keys()
            for k, v in want.items():
                if isinstance(v, float):  # InfluxDB's JSON writes 1e16 as 10000000000000000
                    assert isinstance(got[k], (int, float)) and float(got[k]) == v, (k, got[k])
                else:
                    assert got[k] == v and type(got[k]) is type(v), (k, got[k])
            influx.query(f'DROP DATABASE "{db}"')

        check()
    finally:
        influx.stop()
