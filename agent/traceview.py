"""``log-shuttle trace TRACE_ID`` and ``log-shuttle traces``: traces drawn in the terminal from
NDJSON, either the files of ``log-shuttle server`` (a directory: ``received*.ndjson``) or the
agent's own NDJSON output (a file).

``trace`` draws one trace as a waterfall: each span on its line, indented under its parent,
with its offset from the trace's start, a bar over the trace's duration, its own duration, kind,
method and path, status and process; each log line joined to a span under it. ``traces`` lists
the traces found (most recent first, or the slowest, or only those with errors): id, start,
duration, spans, errors, lines, root.

Only records that name the trace are decoded for ``trace`` (a byte search first), and only span
records for ``traces``: a file of millions of lines is read once, line by line.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

BAR = 32
_decode = msgspec.json.Decoder().decode


def rfc3339_ns(text: str) -> int:
    """``2026-12-02T17:52:41.123456789Z`` -> nanoseconds since the epoch."""
    base, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm((int(base[0:4]), int(base[5:7]), int(base[8:10]), int(base[11:13]),
                            int(base[14:16]), int(base[17:19]), 0, 0, 0))
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def ndjson_files(source: str) -> list[Path]:
    """The files to read: a file as given; a directory's received*.ndjson, oldest first."""
    path = Path(source)
    if path.is_dir():
        def order(p: Path) -> tuple[int, int]:
            stem = p.stem
            return (1, 0) if stem == "received" else (0, int(stem.rsplit("-", 1)[-1] or 0))
        return sorted((p for p in path.glob("received*.ndjson")), key=order)
    return [path]


def records(sources: list[str], *, containing: bytes = b"") -> Iterator[dict[str, Any]]:
    for src in sources:
        for path in ndjson_files(src):
            with open(path, "rb") as f:
                for line in f:
                    if containing and containing not in line:
                        continue
                    try:
                        rec = _decode(line)
                    except msgspec.DecodeError:
                        continue  # a line being written, or not ours
                    if isinstance(rec, dict):
                        yield rec


@dataclass
class Span:
    rec: dict[str, Any]
    start: int
    end: int
    children: list[Span] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.rec.get("span_id", "")


def span_of(rec: dict[str, Any]) -> Span:
    start = rfc3339_ns(rec["time"])
    return Span(rec, start, max(start, int(rec.get("end_ns") or start)))


@dataclass
class Trace:
    trace_id: str
    spans: list[Span]
    roots: list[Span]
    lines: list[dict[str, Any]]
    """Lines joined to a span of this trace that is not among the spans read."""

    @property
    def start(self) -> int:
        return min(s.start for s in self.spans) if self.spans else 0

    @property
    def end(self) -> int:
        return max(s.end for s in self.spans) if self.spans else 0


def load_trace(trace_id: str, sources: list[str]) -> Trace:
    trace_id = trace_id.lower()
    spans: dict[str, Span] = {}
    lines: list[dict[str, Any]] = []
    for rec in records(sources, containing=trace_id.encode()):
        if rec.get("trace_id") != trace_id:
            continue
        if rec.get("type") == "span":
            spans[rec["span_id"]] = span_of(rec)
        elif "line" in rec:
            lines.append(rec)
    orphans = []
    for line in lines:
        s = spans.get(line.get("span_id", ""))
        (s.lines if s is not None else orphans).append(line)
    roots = []
    for s in spans.values():
        parent = spans.get(s.rec.get("parent_span_id", ""))
        (parent.children if parent is not None and parent is not s else roots).append(s)
    for s in spans.values():
        s.children.sort(key=lambda c: c.start)
        s.lines.sort(key=lambda r: (r.get("time", ""), r.get("offset", 0)))
    roots.sort(key=lambda c: c.start)
    return Trace(trace_id, list(spans.values()), roots, orphans)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms" if ns < 10**9 else f"{ns / 1e9:.3f} s"


def _label(s: Span) -> str:
    r = s.rec
    a = r.get("attrs", {})
    res = r.get("resource", {})
    path = a.get("url.path", "")
    if a.get("url.query"):
        path += "?" + str(a["url.query"])
    status = a.get("http.response.status_code", "")
    who = res.get("service.name", "")
    if res.get("process.pid"):
        who += f" pid {res['process.pid']}"
    peer = ""
    if r.get("kind") == "client" and a.get("server.address"):
        peer = f" -> {a['server.address']}:{a.get('server.port', '')}"
    err = " ERROR" if r.get("error") else ""
    return f"{r.get('kind', '').upper()} {r.get('name', '')} {path}{peer} {status}{err}  [{who}]"


def render(t: Trace, *, width: int = BAR) -> str:
    if not t.spans:
        return f"trace {t.trace_id}: no spans found\n"
    start, total = t.start, max(1, t.end - t.start)
    nlines = sum(len(s.lines) for s in t.spans) + len(t.lines)
    out = [f"trace {t.trace_id}  {len(t.spans)} spans, {nlines} log lines, {_ms(t.end - start)}"]

    def walk(s: Span, depth: int) -> None:
        a = int((s.start - start) * width / total)
        b = max(a + 1, int((s.end - start) * width / total + 0.999))
        bar = " " * a + "=" * (min(b, width) - a)
        out.append(f"{_ms(s.start - start):>12}  |{bar:<{width}}|  {_ms(s.end - s.start):>12}  "
                   f"{'  ' * depth}{_label(s)}")
        for line in s.lines:
            out.append(f"{'':>12}   {'':<{width}}   {'':>12}  {'  ' * depth}  | "
                       f"{line.get('line', '')}")
        for c in s.children:
            walk(c, depth + 1)

    for r in t.roots:
        walk(r, 0)
    if t.lines:
        out.append("lines of spans not found:")
        out += [f"  | {x.get('line', '')}" for x in t.lines]
    return "\n".join(out) + "\n"


@dataclass
class Summary:
    trace_id: str
    start: int = 0
    end: int = 0
    spans: int = 0
    errors: int = 0
    root: str = ""
    root_start: int = 1 << 62


def summaries(sources: list[str]) -> list[Summary]:
    found: dict[str, Summary] = {}
    for rec in records(sources, containing=b'"span"'):
        if rec.get("type") != "span":
            continue
        s = span_of(rec)
        t = found.get(rec["trace_id"])
        if t is None:
            t = found[rec["trace_id"]] = Summary(rec["trace_id"], s.start, s.end)
        t.start, t.end = min(t.start, s.start), max(t.end, s.end)
        t.spans += 1
        t.errors += bool(rec.get("error"))
        if s.start < t.root_start:
            t.root_start = s.start
            t.root = _label(s)
    return list(found.values())


def render_list(items: list[Summary], *, slowest: bool = False, errors: bool = False,
                limit: int = 20) -> str:
    if errors:
        items = [t for t in items if t.errors]
    key = (lambda t: t.end - t.start) if slowest else (lambda t: t.start)
    items = sorted(items, key=key, reverse=True)[:limit]
    out = [f"{'trace id':32}  {'start (UTC)':23}  {'duration':>12}  spans  errors  root"]
    for t in items:
        secs, frac = divmod(t.start, 10**9)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{frac // 10**6:03d}"
        out.append(f"{t.trace_id:32}  {stamp:23}  {_ms(t.end - t.start):>12}  {t.spans:5}  "
                   f"{t.errors:6}  {t.root}")
    return "\n".join(out) + "\n"


DEFAULT_SOURCE = "/var/lib/log-shuttle/received"
"""The server's default output directory."""


def default_sources(given: list[str] | None) -> list[str]:
    if given:
        return given
    env = os.environ.get("LOG_SHUTTLE_SERVER__OUTPUT_DIR")
    return [env or DEFAULT_SOURCE]
