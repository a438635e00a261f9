"""Events of any provider, decoded with the schema TDH gives for them.

``TdhGetEventInformation`` returns a TRACE_EVENT_INFO: names (provider, task, event) and one
EVENT_PROPERTY_INFO per property (in-type, flags, count, length, struct members). It is asked
once per (provider, id, version) and the parsed :class:`Schema` is cached; the payload is then
walked here, in Python, by :func:`decode_fields`, so that everything after the one TDH call is
plain code the tests run on Linux. TraceLogging events describe themselves in an extended data
item instead of a manifest: their schemas are cached by that description.

Fields come out flat: ``Name`` for a scalar, ``Name[2]`` for an array element, ``Outer.Inner``
for a struct member. Integers stay integers; GUIDs, SIDs, binary (hex), FILETIME / SYSTEMTIME
(RFC 3339) become strings. Value maps (names for enum values) are not applied.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from common.timefmt import rfc3339_ns
from inputs.etw.errors import PayloadError
from inputs.etw.payload import Reader
from inputs.etw.structs import (
    PropertyParamCount,
    PropertyParamFixedCount,
    PropertyParamLength,
    PropertyStruct,
    guid_text,
)

# TDH_INTYPE
IN_NULL, IN_UNICODESTRING, IN_ANSISTRING = 0, 1, 2
IN_INT8, IN_UINT8, IN_INT16, IN_UINT16, IN_INT32, IN_UINT32, IN_INT64, IN_UINT64 = range(3, 11)
IN_FLOAT, IN_DOUBLE, IN_BOOLEAN, IN_BINARY, IN_GUID, IN_POINTER = range(11, 17)
IN_FILETIME, IN_SYSTEMTIME, IN_SID, IN_HEXINT32, IN_HEXINT64 = range(17, 22)
IN_MANIFEST_COUNTEDSTRING, IN_MANIFEST_COUNTEDANSISTRING, _IN_RESERVED24 = 22, 23, 24
IN_MANIFEST_COUNTEDBINARY = 25
IN_COUNTEDSTRING, IN_COUNTEDANSISTRING = 300, 301
IN_REVERSEDCOUNTEDSTRING, IN_REVERSEDCOUNTEDANSISTRING = 302, 303
IN_NONNULLTERMINATEDSTRING, IN_NONNULLTERMINATEDANSISTRING = 304, 305
IN_UNICODECHAR, IN_ANSICHAR, IN_SIZET, IN_HEXDUMP, IN_WBEMSID = 306, 307, 308, 309, 310

_FIXED = {
    IN_INT8: struct.Struct("<b"), IN_UINT8: struct.Struct("<B"),
    IN_INT16: struct.Struct("<h"), IN_UINT16: struct.Struct("<H"),
    IN_INT32: struct.Struct("<i"), IN_UINT32: struct.Struct("<I"),
    IN_INT64: struct.Struct("<q"), IN_UINT64: struct.Struct("<Q"),
    IN_FLOAT: struct.Struct("<f"), IN_DOUBLE: struct.Struct("<d"),
    IN_HEXINT32: struct.Struct("<I"), IN_HEXINT64: struct.Struct("<Q"),
}
_TEI_SIZE = 112
_EPI = struct.Struct("<IIHHIHHI")  # EVENT_PROPERTY_INFO, 24 bytes
_TEI_OFFSETS = struct.Struct("<13I")  # DecodingSource .. EventNameOffset (bytes 48..99)
_MAX_ARRAY = 4096
"""More elements than this in one array make the payload malformed (a bound, not a limit of ETW)."""

Value = str | int | float | bool | None


@dataclass(frozen=True)
class Property:
    name: str
    flags: int
    in_type: int  # struct: index of its first member
    out_type: int  # struct: number of members
    count: int  # or the index of the property holding the count
    length: int  # or the index of the property holding the length

    @property
    def is_struct(self) -> bool:
        return bool(self.flags & PropertyStruct)


@dataclass(frozen=True)
class Schema:
    """What TDH says of one (provider, id, version)."""

    provider_name: str
    task: str
    event_name: str
    properties: tuple[Property, ...]
    top_level: int


def _wstr_at(buf: bytes, offset: int) -> str:
    if not offset or offset >= len(buf):
        return ""
    r = Reader(buf, offset)
    try:
        return r.utf16z("name")
    except PayloadError:
        return ""


def parse_schema(buf: bytes) -> Schema:
    """A TRACE_EVENT_INFO buffer (as TdhGetEventInformation fills it) as a Schema."""
    if len(buf) < _TEI_SIZE:
        raise PayloadError(f"TRACE_EVENT_INFO: {len(buf)} bytes, shorter than its {_TEI_SIZE}-byte header")
    offsets = _TEI_OFFSETS.unpack_from(buf, 48)
    provider_off, task_off, event_off = offsets[1], offsets[5], offsets[12]
    count, top_level = struct.unpack_from("<II", buf, 100)
    if _TEI_SIZE + count * _EPI.size > len(buf) or top_level > count:
        raise PayloadError(f"TRACE_EVENT_INFO: {count} properties ({top_level} top-level) do not "
                           f"fit in {len(buf)} bytes")
    props = []
    for i in range(count):
        flags, name_off, in_type, out_type, _map, cnt, length, _tags = _EPI.unpack_from(
            buf, _TEI_SIZE + i * _EPI.size)
        props.append(Property(name=_wstr_at(buf, name_off) or f"field{i}", flags=flags,
                              in_type=in_type, out_type=out_type, count=cnt, length=length))
    return Schema(provider_name=_wstr_at(buf, provider_off), task=_wstr_at(buf, task_off),
                  event_name=_wstr_at(buf, event_off), properties=tuple(props), top_level=top_level)


class SchemaCache:
    """Schemas by (provider, id, version), fetched through ``fetch`` (TDH) once each.

    ``fetch(record_ptr)`` returns the TRACE_EVENT_INFO bytes or raises. A failure is cached too
    (as None), so that an event TDH cannot describe costs one call, not one per occurrence."""

    def __init__(self, fetch: Callable[[Any], bytes], *, max_entries: int = 4096) -> None:
        self._fetch = fetch
        self._max = max_entries
        self._cache: dict[Any, Schema | None] = {}
        self.misses = 0
        self.failures = 0

    def get(self, key: Any, record_ptr: Any) -> Schema | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        self.misses += 1
        try:
            schema: Schema | None = parse_schema(self._fetch(record_ptr))
        except Exception:
            self.failures += 1
            schema = None
        if len(self._cache) >= self._max:
            self._cache.clear()  # a provider with unbounded TraceLogging shapes: start over
        self._cache[key] = schema
        return schema

    def __len__(self) -> int:
        return len(self._cache)


def decode_fields(schema: Schema, payload: bytes, *, pointer_size: int = 8) -> dict[str, Value]:
    """Walk ``payload`` by the schema's properties; PayloadError if it does not fit."""
    walker = _Walker(schema, Reader(payload), pointer_size)
    for i in range(schema.top_level):
        walker.property(i, "")
    return walker.out


class _Walker:
    def __init__(self, schema: Schema, reader: Reader, pointer_size: int) -> None:
        self.props = schema.properties
        self.r = reader
        self.ptr = pointer_size
        self.out: dict[str, Value] = {}
        self.ints: dict[int, int] = {}  # top-level property index -> its value, for counts and lengths

    def _ref(self, index: int, what: str, name: str) -> int:
        try:
            return self.ints[index]
        except KeyError:
            raise PayloadError(f"{name}: its {what} is property {index}, which holds no integer "
                               f"read before it") from None

    def property(self, index: int, prefix: str) -> None:
        if index >= len(self.props):
            raise PayloadError(f"property {index} is outside the schema's {len(self.props)}")
        p = self.props[index]
        name = prefix + p.name
        if p.flags & PropertyParamCount:
            count, array = self._ref(p.count, "count", name), True
        else:
            count = p.count or 1
            array = bool(p.flags & PropertyParamFixedCount) or count > 1
        if count > _MAX_ARRAY:
            raise PayloadError(f"{name}: {count} elements")
        length = self._ref(p.length, "length", name) if p.flags & PropertyParamLength else p.length
        for i in range(count):
            element = f"{name}[{i}]" if array else name
            if p.is_struct:
                for member in range(p.in_type, p.in_type + p.out_type):
                    self.property(member, element + ".")
            else:
                value = self.scalar(p.in_type, length, element)
                self.out[element] = value
                if not prefix and not array and isinstance(value, int) and not isinstance(value, bool):
                    self.ints[index] = value

    def scalar(self, in_type: int, length: int, field: str) -> Value:
        r = self.r
        fixed = _FIXED.get(in_type)
        if fixed is not None:
            (value,) = r.unpack(fixed, field)
            return value
        if in_type == IN_UNICODESTRING:
            return r.utf16(length, field) if length else (r.utf16z(field) if r.remaining() else "")
        if in_type == IN_ANSISTRING:
            return r.ansi(length, field) if length else (r.ansiz(field) if r.remaining() else "")
        if in_type == IN_BOOLEAN:
            return r.u32(field) != 0
        if in_type in (IN_POINTER, IN_SIZET):
            return r.u64(field) if self.ptr == 8 else r.u32(field)
        if in_type == IN_GUID:
            return r.guid(field)
        if in_type == IN_FILETIME:
            ns = r.filetime_ns(field)
            return rfc3339_ns(ns) if ns else None
        if in_type == IN_SYSTEMTIME:
            y, mo, _dow, d, h, mi, s, ms = struct.unpack("<8H", r.take(16, field))
            try:
                return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=timezone.utc).isoformat()
            except ValueError:
                return None
        if in_type == IN_SID:
            return r.sid(field)
        if in_type == IN_WBEMSID:
            r.take(2 * self.ptr, field)  # a TOKEN_USER (two pointers) comes first
            return r.sid(field)
        if in_type == IN_BINARY:
            return r.take(length, field).hex()
        if in_type in (IN_MANIFEST_COUNTEDBINARY,):
            return r.take(r.u16(field), field).hex()
        if in_type == IN_HEXDUMP:
            return r.take(r.u32(field), field).hex()
        if in_type in (IN_COUNTEDSTRING, IN_MANIFEST_COUNTEDSTRING):
            return r.take(r.u16(field), field).decode("utf-16-le", "replace")
        if in_type in (IN_COUNTEDANSISTRING, IN_MANIFEST_COUNTEDANSISTRING):
            return r.take(r.u16(field), field).decode("latin-1")
        if in_type == IN_REVERSEDCOUNTEDSTRING:
            return r.take(int.from_bytes(r.take(2, field), "big"), field).decode("utf-16-le", "replace")
        if in_type == IN_REVERSEDCOUNTEDANSISTRING:
            return r.take(int.from_bytes(r.take(2, field), "big"), field).decode("latin-1")
        if in_type == IN_NONNULLTERMINATEDSTRING:
            return r.take(r.remaining() & ~1, field).decode("utf-16-le", "replace")
        if in_type == IN_NONNULLTERMINATEDANSISTRING:
            return r.take(r.remaining(), field).decode("latin-1")
        if in_type == IN_UNICODECHAR:
            return r.take(2, field).decode("utf-16-le", "replace")
        if in_type == IN_ANSICHAR:
            return r.take(1, field).decode("latin-1")
        if in_type == IN_NULL:
            return None
        raise PayloadError(f"{field}: in-type {in_type} is not supported")


def parse_providers(buf: bytes) -> dict[str, str]:
    """A PROVIDER_ENUMERATION_INFO buffer (TdhEnumerateProviders) as {lower-case name: GUID text}."""
    if len(buf) < 8:
        raise PayloadError("PROVIDER_ENUMERATION_INFO: shorter than its header")
    (count,) = struct.unpack_from("<I", buf, 0)
    if 8 + 24 * count > len(buf):
        raise PayloadError(f"PROVIDER_ENUMERATION_INFO: {count} providers do not fit in {len(buf)} bytes")
    out = {}
    for i in range(count):
        base = 8 + 24 * i
        guid = guid_text(buf[base:base + 16])
        (name_off,) = struct.unpack_from("<I", buf, base + 20)
        name = _wstr_at(buf, name_off)
        if name:
            out[name.lower()] = guid
    return out
