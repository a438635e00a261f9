"""The span builder's rules on made-up events (the kernel's part is tested with real servers in
tests/pipeline/test_tracing_live.py): attributes, traceparent, the thread and connection parents,
the hold bound; and the spans as the pipeline makes them, their msgpack bytes straight from the
compiled module, against msgspec's bytes of the same SpanEvents."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from common import tracecontext
from common.events import ConnEvent, HttpEvent, ProcessInfo, SpanEvent
from common.fastpath import observe_spans
from common.tracecontext import find_headers, parse_traceparent
from pipeline import spans as spans_module
from pipeline.spans import PACKED, SpanBuilder, SpansConfig, _Span

MS = 1_000_000
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def http(direction, pid, tid, fd, start_ms, dur_ms, *, path="/x", status=200, tp="", peer=("", 0),
         comm="srv", process=None):
    return HttpEvent(time_ns=1_700_000_000_000 * MS + start_ms * MS, pid=pid, tid=tid, comm=comm,
                     fd=fd, direction=direction, method="GET", path=path, status=status,
                     duration_ns=dur_ms * MS, peer_addr=peer[0], peer_port=peer[1],
                     process=process, boot_ns=10**9 + start_ms * MS, traceparent=tp)


def conn(kind, pid, fd, local, peer):
    return ConnEvent(kind=kind, time_ns=1, pid=pid, fd=fd, saddr=local[0], sport=local[1],
                     daddr=peer[0], dport=peer[1])


def test_a_server_span_has_the_semantic_conventions_and_a_new_trace():
    b = SpanBuilder()
    proc = ProcessInfo(pid=10, comm="nginx", exe="/usr/sbin/nginx",
                       cmdline=["nginx:", "worker", "process"], container_id="ab" * 32)
    out = b.observe([conn("accept", 10, 4, ("127.0.0.1", 8080), ("127.0.0.1", 5555)),
                     http("server", 10, 10, 4, 0, 3, path="/a?b=1", status=503,
                          peer=("127.0.0.1", 5555), process=proc, comm="nginx")], 0.0)
    (s,) = out
    assert isinstance(s, SpanEvent) and s.kind == "server" and s.name == "GET"
    assert len(s.trace_id) == 32 and len(s.span_id) == 16 and s.parent_span_id == ""
    assert s.end_ns - s.time_ns == 3 * MS and s.error
    assert s.attrs["url.path"] == "/a" and s.attrs["url.query"] == "b=1"
    assert s.attrs["http.response.status_code"] == 503 and s.attrs["error.type"] == "503"
    assert (s.attrs["server.address"], s.attrs["server.port"]) == ("127.0.0.1", 8080)
    assert (s.attrs["client.address"], s.attrs["client.port"]) == ("127.0.0.1", 5555)
    assert s.attrs["network.protocol.version"] == "1.1" and s.attrs["url.scheme"] == "http"
    assert s.resource == {"service.name": "nginx", "process.pid": 10,
                          "process.executable.name": "nginx",
                          "process.executable.path": "/usr/sbin/nginx",
                          "process.command_line": "nginx: worker process",
                          "container.id": "ab" * 32}


@pytest.mark.parametrize("packed", [False, True])
def test_an_exchange_seen_in_tls_plaintext_is_https(packed):
    b = SpanBuilder(packed=packed)
    out = b.observe([msgspec.structs.replace(
        http("client", 20, 20, 3, 0, 1, path="/p?q=1", peer=("10.0.0.5", 8443), comm="curl"),
        tls=True), http("client", 21, 21, 3, 0, 1, path="/p", peer=("10.0.0.5", 80))], 0.0)
    tls, plain = [msgspec.msgpack.decode(bytes(s), type=SpanEvent) if type(s) is msgspec.Raw
                  else s for s in out]
    assert tls.attrs["url.scheme"] == "https"
    assert tls.attrs["url.full"] == "https://10.0.0.5:8443/p?q=1"
    assert plain.attrs["url.scheme"] == "http" and plain.attrs["url.full"] == "http://10.0.0.5:80/p"


def test_status_error_rules_differ_by_side():
    b = SpanBuilder()
    server404, client404 = b.observe([http("server", 1, 1, 3, 0, 1, status=404),
                                      http("client", 2, 2, 3, 0, 1, status=404)], 0.0)
    assert not server404.error and client404.error
    assert "error.type" not in server404.attrs and client404.attrs["error.type"] == "404"


def test_service_name_is_overridable():
    b = SpanBuilder(SpansConfig(services={"python3": "shop"}))
    (s,) = b.observe([http("server", 1, 1, 3, 0, 1, comm="python3")], 0.0)
    assert s.resource["service.name"] == "shop"


def test_traceparent_gives_trace_and_parent():
    b = SpanBuilder()
    (s,) = b.observe([http("server", 1, 1, 3, 0, 1, tp=TP)], 0.0)
    assert (s.trace_id, s.parent_span_id, s.parent_how) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "traceparent")


def test_a_client_request_with_a_traceparent_is_the_span_it_names():
    b = SpanBuilder()
    (c,) = b.observe([http("client", 5, 5, 3, 0, 1, tp=TP, comm="curl")], 0.0)
    assert (c.trace_id, c.span_id, c.parent_span_id, c.parent_how) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "", "traceparent")


def test_an_invalid_traceparent_is_ignored():
    for bad in ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "junk"):
        assert parse_traceparent(bad) is None, bad
    b = SpanBuilder()
    (s,) = b.observe([http("server", 1, 1, 3, 0, 1, tp="junk")], 0.0)
    assert s.parent_how == "" and s.parent_span_id == ""


def test_headers_are_found_anywhere_and_a_cut_one_is_not_taken():
    req = (b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nTraceParent: " + TP.encode() +
           b"\r\ntracestate: k=v\r\n\r\n")
    found = find_headers(req)
    assert found.traceparent == TP and found.tracestate == "k=v" and not found.cut
    cut = find_headers(req[:60])
    assert cut.traceparent == "" and cut.cut
    assert find_headers(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody traceparent: 1\r\n").traceparent == ""
    assert tuple(find_headers(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")) == ("", "", False)
    assert tuple(find_headers(b"GET / HTTP/1.1\r\nHost: a\r\nAcc")) == ("", "", True)
    other = find_headers(b"GET / HTTP/1.1\r\nTrace-Id: 1\r\nTRACESTATE: a=1\r\n\r\n")
    assert tuple(other) == ("", "a=1", False)


def frontend_backend(order):
    """curl -> frontend (pid 100, thread 101) -> backend (pid 200, thread 201), one host.
    The frontend reads at 0, calls the backend over its fd 7 (port 40000 -> 9000) from 2 to 8;
    the backend serves from 3 to 7; the frontend answers at 10."""
    setup = [conn("accept", 100, 5, ("127.0.0.1", 8000), ("127.0.0.1", 30000)),
             conn("connect", 100, 7, ("127.0.0.1", 40000), ("127.0.0.1", 9000)),
             conn("accept", 200, 4, ("127.0.0.1", 9000), ("127.0.0.1", 40000))]
    ex = {"front": http("server", 100, 101, 5, 0, 10, path="/front", tp=TP),
          "call": http("client", 100, 101, 7, 2, 6, path="/back",
                       peer=("127.0.0.1", 9000)),
          "back": http("server", 200, 201, 4, 3, 4, path="/back", peer=("127.0.0.1", 40000))}
    b = SpanBuilder()
    out = b.observe(setup, 0.0)
    for name in order:
        out += b.observe([ex[name]], 0.01)
    return b, {s.attrs["url.path"] + ":" + s.kind: s for s in out}


def test_frontend_to_backend_is_one_trace_in_the_order_events_come():
    b, spans = frontend_backend(["back", "call", "front"])  # the order the kernel ends them
    front, call, back = spans["/front:server"], spans["/back:client"], spans["/back:server"]
    assert front.trace_id == call.trace_id == back.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert call.parent_span_id == front.span_id and call.parent_how == "thread"
    assert back.parent_span_id == call.span_id and back.parent_how == "connection"
    assert front.parent_span_id == "00f067aa0ba902b7"
    assert not b.pending


def test_any_arrival_order_gives_the_same_tree():
    for order in (["front", "call", "back"], ["call", "back", "front"], ["back", "front", "call"]):
        _, spans = frontend_backend(order)
        front, call, back = spans["/front:server"], spans["/back:client"], spans["/back:server"]
        assert call.parent_span_id == front.span_id, order
        assert back.parent_span_id == call.span_id, order
        assert len({front.trace_id, call.trace_id, back.trace_id}) == 1


def test_a_parent_that_never_comes_makes_a_root_after_the_hold():
    b = SpanBuilder(SpansConfig(hold=0.5))
    b.observe([conn("accept", 100, 5, ("127.0.0.1", 8000), ("127.0.0.1", 30000))], 0.0)
    assert b.observe([http("client", 100, 101, 7, 2, 6)], 1.0) == []  # waits: 100 serves
    assert b.time_left(1.2) == 0.3 or abs(b.time_left(1.2) - 0.3) < 1e-9
    assert b.expire(1.4) == []
    (s,) = b.expire(1.5)
    assert s.parent_how == "" and s.parent_span_id == "" and len(s.trace_id) == 32
    assert not b.pending and not b.waiting


def test_a_client_of_a_process_that_serves_nothing_goes_at_once():
    b = SpanBuilder()
    (s,) = b.observe([http("client", 300, 300, 3, 0, 1, comm="curl")], 0.0)
    assert s.kind == "client" and s.parent_how == ""


def test_a_server_exchange_that_does_not_hold_the_client_one_is_not_its_parent():
    b = SpanBuilder(SpansConfig(hold=0.5))
    b.observe([conn("accept", 100, 5, ("127.0.0.1", 8000), ("127.0.0.1", 30000))], 0.0)
    b.observe([http("server", 100, 101, 5, 0, 1)], 0.0)  # an earlier request of the thread
    assert b.observe([http("client", 100, 101, 7, 2, 6)], 0.0) == []
    later = b.observe([http("server", 100, 101, 5, 20, 5)], 0.1)  # does not hold 2..8 either
    assert [s.kind for s in later] == ["server"]
    (root,) = b.expire(0.6)
    assert root.parent_how == ""


# --- spans as their msgpack bytes (SpanBuilder(packed=True), what the pipeline makes) ----------

compiled = pytest.mark.skipif(not PACKED, reason="common._speedups not built: the pipeline makes "
                              "SpanEvents (tests/common/test_fastpath.py fails)")

texts = st.text(max_size=12) | st.sampled_from(["x" * 31, "y" * 32, "é" * 200, "z" * 65536])
ints = st.sampled_from([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1, -1, -32, -33,
                        -129, -2**31 - 1, -2**63]) | st.integers(-2**63, 2**63 - 1)
exchanges = st.builds(
    lambda direction, path, status, peer, version, tp, cut, weight, tid, dur, local, tstate, how,
    tls:
    (HttpEvent(time_ns=1_700_000_000_000 * MS + dur, pid=10, tid=tid, comm="srv", fd=4,
               direction=direction, method="GET", path=path, status=status, duration_ns=dur,
               peer_addr=peer[0], peer_port=peer[1], version=version, boot_ns=10**9,
               traceparent=tp, headers_cut=cut, weight=weight, tls=tls,
               process=ProcessInfo(pid=10, comm="srv", exe="/bin/srv", cmdline=["srv", "é"])),
     local, tstate, how),
    st.sampled_from(["server", "client"]),
    st.one_of(texts, st.builds(lambda a, b: f"{a}?{b}", texts, texts)),
    st.sampled_from([0, 200, 399, 400, 404, 499, 500, 503, 2**31, -1]) | ints,
    st.sampled_from([("", 0), ("127.0.0.1", 40001), ("fe80::1", 65535), ("é", 1)])
    | st.tuples(texts, ints),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/", "/x", "a/b/c", "", "weird"]),
    st.sampled_from(["", TP]),
    st.booleans(),
    st.sampled_from([1, 2, 65535, 0, -5]),
    ints,
    st.integers(0, 10**12),
    st.sampled_from([None, ("127.0.0.1", 8080, "127.0.0.1", 40001), ("::1", 0, "", 0)])
    | st.tuples(texts, ints, texts, ints),
    texts, st.sampled_from(["", "connection", "thread", "traceparent"]), st.booleans())


@compiled
@settings(max_examples=400, deadline=None)
@given(cases=st.lists(exchanges, min_size=1, max_size=4))
def test_a_span_s_bytes_are_msgspec_s_bytes_of_its_span_event(cases):
    b = SpanBuilder(packed=True)
    for ev, local, tstate, how in cases:
        s = _Span(ev, "b" * 16, ev.boot_ns, ev.boot_ns + ev.duration_ns, 0.0,
                  trace_id="a" * 32, parent="c" * 16 if how else "", how=how,
                  tracestate=tstate, local=local)
        packed = b._packed(s)
        assert type(packed) is msgspec.Raw  # made in C, not the fallback
        assert bytes(packed) == msgspec.msgpack.encode(b._event(s))


@compiled
def test_a_span_of_sixteen_attributes_is_a_map_16_as_msgspec_writes_it():
    ev = HttpEvent(time_ns=1, pid=10, tid=11, comm="srv", fd=4, direction="server", method="GET",
                   path="/a?b=1", status=503, duration_ns=5, peer_addr="127.0.0.1",
                   peer_port=40001, boot_ns=1, headers_cut=True, weight=3, tls=True)
    s = _Span(ev, "b" * 16, 1, 6, 0.0, trace_id="a" * 32,
              local=("127.0.0.1", 8443, "127.0.0.1", 40001))
    b = SpanBuilder(packed=True)
    expected = msgspec.msgpack.encode(b._event(s))
    assert len(b._event(s).attrs) == 16
    assert bytes(b._packed(s)) == expected


@compiled
def test_the_pipeline_s_spans_are_their_bytes_and_decode_to_the_same_spans():
    def feed(b):
        return b.observe([conn("accept", 10, 4, ("127.0.0.1", 8080), ("127.0.0.1", 5555)),
                          http("server", 10, 10, 4, 0, 3, path="/a?b=1", status=503,
                               peer=("127.0.0.1", 5555), comm="nginx"),
                          http("client", 20, 20, 3, 0, 1, status=404, comm="curl")], 0.0)

    packed = feed(SpanBuilder(packed=True))
    assert PACKED and [type(s) for s in packed] == [msgspec.Raw, msgspec.Raw]
    spans = [msgspec.msgpack.decode(s, type=SpanEvent) for s in packed]
    objects = feed(SpanBuilder())
    strip = lambda s: msgspec.structs.replace(s, trace_id="", span_id="")  # noqa: E731 - new ids
    assert [strip(s) for s in spans] == [strip(s) for s in objects]
    assert spans[0].attrs["url.query"] == "b=1" and spans[1].attrs["error.type"] == "404"


# --- observe()'s loop in C (common/speedups/spans.c observe_spans), against the same in Python -------

fast = pytest.mark.skipif(not PACKED or observe_spans is None,
                          reason="common._speedups not built: observe() runs in Python "
                                 "(tests/common/test_fastpath.py fails)")
PORTS = st.sampled_from([8080, 40001, 40002])
FRONT, BACK, OTHER = ("127.0.0.1", 40001), ("127.0.0.1", 8080), ("127.0.0.1", 40002)
WIRED = [conn("connect", 20, 3, FRONT, BACK), conn("accept", 10, 4, BACK, FRONT),
         conn("connect", 10, 5, OTHER, BACK), conn("accept", 11, 4, BACK, OTHER)]
"""Connections of this host's processes to each other: 20 calls 10, whose thread calls 11."""
ENDS = st.sampled_from([("client", 20, 3), ("server", 10, 4), ("client", 10, 5),
                        ("server", 11, 4), ("server", 10, 3), ("client", 11, 3)])
"""(direction, pid, fd) of exchanges, mostly on the wired connections."""
conns = st.builds(lambda kind, pid, fd, lport, pport: conn(kind, pid, fd, ("127.0.0.1", lport),
                                                          ("127.0.0.1", pport)),
                  st.sampled_from(["connect", "accept", "close"]), st.sampled_from([10, 11, 20]),
                  st.sampled_from([3, 4, -1]), PORTS, PORTS)
exchanges_on_ends = st.builds(
    lambda end, tid, start, dur, tp, boot, process, path: msgspec.structs.replace(
        http(end[0], end[1], tid, end[2], start, dur, tp=tp, path=path, peer=("127.0.0.1", 40001),
             process=ProcessInfo(pid=end[1], start_ns=5, exe="/bin/p") if process else None),
        boot_ns=10**9 + start * MS if boot else 0),
    ENDS, st.sampled_from([10, 11, 20]), st.integers(0, 6),
    st.one_of(st.integers(0, 3), st.integers(8, 12)),  # short ones in long ones, often
    st.sampled_from(["", "", "", "", TP, "00-bad"]), st.integers(0, 5).map(bool), st.booleans(),
    st.sampled_from(["/x", "/y?q=1"]))
others = [conns, st.tuples(st.just("expire"), st.sampled_from([0.0, 0.1, 0.6])), st.just("cut")]
ops = st.integers(0, 10).flatmap(lambda i: exchanges_on_ends if i < 8 else others[i - 8])
"""Mostly exchanges (one_of would give each branch the same weight)."""
scripts = st.builds(lambda wired, rest: (WIRED if wired else []) + rest,
                    st.integers(0, 4).map(bool), st.lists(ops, min_size=4, max_size=60))


def _run(script, compiled_loop):
    """Feed a script of events (in messages cut at "cut", with expire() between) to a packed
    builder whose observe() loop is in C or in Python; what came out at each step, and the
    builder's tables at the end, with the same ids drawn."""
    tracecontext._random.seed(1234)
    tracecontext._span_ids.clear()
    tracecontext._trace_ids.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spans_module, "EXCHANGES_KEPT", 6)  # the Python path's bound
        return _feed(script, compiled_loop)


def _feed(script, compiled_loop):
    b = SpanBuilder(SpansConfig(hold=0.5), packed=True)
    b.max_pending = 3  # below the config's bound: _trim's giving up, often
    if compiled_loop:
        assert b._fast is not None
        b._fast = b._fast[:-1] + (6,)  # the C path's
    else:
        b._fast = None
    made = lambda out: [bytes(x) if type(x) is msgspec.Raw  # noqa: E731
                        else msgspec.msgpack.encode(x) for x in out]
    log, chunk, now = [], [], 0.0
    for op in script + ["cut"]:
        if op == "cut" or type(op) is tuple:
            if chunk:
                out = b.observe(chunk, now)
                log.append(("observe", made(out),
                            sorted(i for i, e in enumerate(chunk) if id(e) in b.unsent)))
                chunk = []
            if type(op) is tuple:
                now += op[1]
                log.append(("expire", made(b.expire(now))))
        else:
            chunk.append(op)
    ids = lambda index: {k: [s.span_id for s in q] for k, q in index.items()}  # noqa: E731
    tables = (dict(b.stats), [(k, s.span_id, s.trace_id, s.sent) for k, s in b.exchanges.items()],
              ids(b.by_thread), ids(b.by_conn), [s.span_id for s in b.pending.values()],
              {k: [s.span_id for s in v] for k, v in b.waiting.items()}, dict(b.conns),
              dict(b.connectors), list(b.servers), [s.span_id for s in b._ready],
              {k: v[1] for k, v in b.resource_cache.items()})
    return log, tables


@fast
@settings(max_examples=300, deadline=None)
@given(script=scripts)
def test_observe_s_loop_in_c_makes_what_python_s_makes(script):
    assert _run(script, True) == _run(script, False)


@fast
def test_the_common_exchanges_go_through_c_and_the_others_through_python(monkeypatch):
    b = SpanBuilder(packed=True)
    taken = []
    original = b._exchange
    monkeypatch.setattr(b, "_exchange", lambda ev, now, out: (taken.append(ev.path),
                                                              original(ev, now, out)))
    front, back = ("127.0.0.1", 40001), ("127.0.0.1", 8080)
    out = b.observe([
        conn("connect", 20, 3, front, back), conn("accept", 10, 4, back, front),
        http("client", 20, 20, 3, 0, 10, path="/root"),           # a root: C
        http("server", 10, 10, 4, 1, 5, path="/child"),           # its parent sent: C
        http("server", 10, 11, 4, 20, 5, path="/orphan"),         # no client holds it: waits
        http("client", 20, 20, 3, 26, 2, path="/beside"),         # /orphan waits on: C
        http("client", 20, 20, 3, 19, 10, path="/late-parent"),   # adopts /orphan: Python
        http("client", 21, 21, 5, 30, 1, path="/traced", tp=TP),  # a traceparent: Python
    ], 0.0)
    assert taken == ["/orphan", "/late-parent", "/traced"]
    spans = [msgspec.msgpack.decode(s, type=SpanEvent) for s in out]
    by_path = {s.attrs["url.path"]: s for s in spans}
    assert by_path["/child"].parent_span_id == by_path["/root"].span_id
    assert by_path["/child"].trace_id == by_path["/root"].trace_id
    assert by_path["/orphan"].parent_span_id == by_path["/late-parent"].span_id
    assert by_path["/beside"].parent_span_id == ""
    assert b.stats["spans"] == 6 and b.stats["connection"] == 2 and b.stats["roots"] == 3


@fast
def test_observe_s_loop_in_c_holds_each_event_as_python_s_for_does():
    """A callback that empties the list of events under the loop (the review's crash) stops it
    where Python's for would stop, and a generator is taken one event at a time."""
    b = SpanBuilder(packed=True)
    events = [conn("accept", 10, 4, ("127.0.0.1", 8080), ("127.0.0.1", 5555))] + [
        http("server", 10, 10, 4, i, 1) for i in range(40)]
    original = b._conn
    b._conn = lambda ev: (events.clear(), original(ev))
    assert b.observe(events, 0.0) == [] and b.stats["spans"] == 0
    seen = []

    def lazily():
        for i in range(3):
            seen.append(len(b.exchanges))
            yield http("server", 10, 10, 4, 100 + i, 1)

    assert len(b.observe(lazily(), 0.0)) == 3 and seen == [0, 1, 2]


@fast
def test_waiters_whose_comparison_runs_python_are_left_to_python():
    """A waiting span whose ``want`` compares by running Python (which here replaces the list
    of waiters under the loop: a use after free in the review's AddressSanitizer build) is
    decided by Python's _adopt, as everything else the C path cannot be sure of."""
    from pipeline.spans import _Span

    results = []
    for compiled in (True, False):
        b = SpanBuilder(packed=True)
        if not compiled:
            b._fast = None
        ev = http("server", 10, 10, 4, 0, 3)

        class Tid(int):
            def __eq__(self, other):
                b.waiting[("thread", 10, 10)] = []
                return int(self) == other

            __hash__ = int.__hash__

        w = _Span(ev, "a" * 16, 0, 1, 0.0, trace_id="t", want=("thread", 10, Tid(10)))
        b.waiting[("thread", 10, 10)] = [w, w]
        out = b.observe([ev], 0.0)
        results.append((len(out), dict(b.stats), {k: len(v) for k, v in b.waiting.items()}))
    assert results[0] == results[1]


@pytest.mark.parametrize("loop", ["c", "python"])
def test_spans_older_than_the_log_join_can_use_are_forgotten(loop):
    """A host at a modest rate keeps the last EXCHANGE_KEEP_NS of spans for the log join, not
    the last 65,536 (~45 MB)."""
    b = SpanBuilder(packed=True)
    if loop == "python" or b._fast is None:
        b._fast = None
    events = [http("client", 20, 20, 3, i * 10, 1) for i in range(3000)]  # 30 s of them
    for i in range(0, len(events), 100):
        b.observe(events[i:i + 100], 0.0)
    assert len(b.exchanges) == spans_module.EXCHANGE_KEEP_NS // (10 * MS) + 1
    assert b.span_of(20, 3, events[-1].boot_ns) is not None
    assert b.span_of(20, 3, events[-1500].boot_ns) is not None
    assert b.span_of(20, 3, events[-1502].boot_ns) is None and b.span_of(20, 3, events[0].boot_ns) is None
    assert b.stats["spans"] == 3000


def _emitted(out):
    return [msgspec.msgpack.decode(bytes(x), type=SpanEvent) if type(x) is msgspec.Raw else x
            for x in out]


@pytest.mark.parametrize("loop", ["c", "python"])
def test_a_child_given_up_while_its_parent_waits_keeps_the_trace_it_went_out_with(loop):
    """A server span adopted by a client span that waits itself (for its thread's request), then
    given up when too many wait (max_pending): it goes out as a root with a trace of its own.
    When its parent's trace comes, the child, already sent, keeps its own: the log join reads
    the kept span, and a line must get the trace its span was sent with."""
    b = SpanBuilder(SpansConfig(hold=0.5), packed=True)
    if loop == "python" or b._fast is None:
        b._fast = None
    a, call_from, callee = ("127.0.0.1", 8080), ("127.0.0.1", 40002), ("127.0.0.1", 9000)
    out = b.observe([conn("accept", 10, 4, a, ("127.0.0.1", 5555)),  # 10 serves...
                     conn("connect", 10, 5, call_from, callee),       # ...and calls 11
                     conn("accept", 11, 4, callee, call_from)], 0.0)
    b.max_pending = 1  # the config's bound (65,536 by default), reached
    child = http("server", 11, 11, 4, 3, 4, path="/child")  # waits for 10's call
    out += b.observe([child], 0.0)
    out += b.observe([http("client", 10, 10, 5, 2, 6, path="/call")], 0.0)  # adopts it, waits
    out += b.observe([http("server", 10, 10, 4, 0, 10, path="/front", tp=TP)], 0.0)
    out += b.expire(10.0)
    spans = {s.attrs["url.path"]: s for s in _emitted(out)}
    assert set(spans) == {"/child", "/call", "/front"}
    assert spans["/call"].trace_id == spans["/front"].trace_id == TP[3:35]
    assert spans["/child"].parent_span_id == "" and spans["/child"].trace_id != TP[3:35]
    kept = b.span_of(11, 4, child.boot_ns)
    assert (kept.span_id, kept.trace_id) == (spans["/child"].span_id, spans["/child"].trace_id)


@settings(max_examples=200, deadline=None)
@given(script=scripts, compiled_loop=st.booleans())
def test_every_kept_span_that_went_out_has_the_ids_it_went_out_with(script, compiled_loop):
    """What the log join reads of a sent span (SpanBuilder.span_of) is what was sent, whatever
    waits, adoptions and give-ups came between (max_pending small: give-ups, often)."""
    b = SpanBuilder(SpansConfig(hold=0.5), packed=True)
    b.max_pending = 3
    if not compiled_loop or b._fast is None:
        b._fast = None
    sent, chunk, now = set(), [], 0.0
    for op in script + ["cut"]:
        if op == "cut" or type(op) is tuple:
            if chunk:
                sent.update((s.span_id, s.trace_id) for s in _emitted(b.observe(chunk, now)))
                chunk = []
            if type(op) is tuple:
                now += op[1]
                sent.update((s.span_id, s.trace_id) for s in _emitted(b.expire(now)))
        else:
            chunk.append(op)
        for s in b.exchanges.values():
            if s.sent:
                assert (s.span_id, s.trace_id) in sent
