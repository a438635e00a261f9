"""TRACE_EVENT_INFO parsing and the payload walk that follows it."""

from __future__ import annotations

import struct

import pytest

from inputs.etw import tdh
from inputs.etw.errors import PayloadError
from inputs.etw.structs import (
    PropertyParamCount,
    PropertyParamFixedCount,
    PropertyParamFixedLength,
    PropertyParamLength,
    PropertyStruct,
    guid_bytes,
)
from tests.inputs.etw.helpers import event_info, ft, sid, u16z

GUID = "{0e2a6a9f-0000-4000-8000-000000000001}"


def test_schema_names_and_properties():
    schema = tdh.parse_schema(event_info([("Count", 0, tdh.IN_UINT32, 0, 1, 0)],
                                         provider_name="Microsoft-Windows-DNS-Client", task="Query"))
    assert (schema.provider_name, schema.task, schema.top_level) == ("Microsoft-Windows-DNS-Client", "Query", 1)
    assert schema.properties[0].name == "Count" and schema.properties[0].in_type == tdh.IN_UINT32


def test_truncated_schema_is_an_error():
    with pytest.raises(PayloadError):
        tdh.parse_schema(event_info([("A", 0, tdh.IN_UINT32, 0, 1, 0)])[:120])


def test_scalars_strings_and_special_types():
    schema = tdh.parse_schema(event_info([
        ("I8", 0, tdh.IN_INT8, 0, 1, 0), ("U16", 0, tdh.IN_UINT16, 0, 1, 0),
        ("I64", 0, tdh.IN_INT64, 0, 1, 0), ("D", 0, tdh.IN_DOUBLE, 0, 1, 0),
        ("B", 0, tdh.IN_BOOLEAN, 0, 1, 0), ("S", 0, tdh.IN_UNICODESTRING, 0, 1, 0),
        ("A", 0, tdh.IN_ANSISTRING, 0, 1, 0), ("G", 0, tdh.IN_GUID, 0, 1, 0),
        ("Sid", 0, tdh.IN_SID, 0, 1, 0), ("T", 0, tdh.IN_FILETIME, 0, 1, 0),
        ("P", 0, tdh.IN_POINTER, 0, 1, 0), ("Bin", PropertyParamFixedLength, tdh.IN_BINARY, 0, 1, 3),
    ]))
    payload = (struct.pack("<bHqd", -5, 65535, -1, 2.5) + struct.pack("<I", 1) + u16z("héllo")
               + b"ansi\0" + guid_bytes(GUID) + sid(5, 18) + ft(1_000_000_000) + struct.pack("<Q", 0xdead)
               + b"\x01\x02\x03")
    fields = tdh.decode_fields(schema, payload)
    assert fields == {"I8": -5, "U16": 65535, "I64": -1, "D": 2.5, "B": True, "S": "héllo",
                      "A": "ansi", "G": GUID, "Sid": "S-1-5-18", "T": "1970-01-01T00:00:01.000000000Z",
                      "P": 0xdead, "Bin": "010203"}


def test_counted_array_and_length_from_other_properties():
    schema = tdh.parse_schema(event_info([
        ("N", 0, tdh.IN_UINT16, 0, 1, 0),
        ("Ids", PropertyParamCount, tdh.IN_UINT32, 0, 0, 0),  # count: property 0
        ("Len", 0, tdh.IN_UINT32, 0, 1, 0),
        ("Blob", PropertyParamLength, tdh.IN_BINARY, 0, 1, 2),  # length: property 2
        ("Name", 0, tdh.IN_UNICODESTRING, 0, 1, 4),  # fixed 4 characters
    ]))
    payload = struct.pack("<H3I", 3, 10, 20, 30) + struct.pack("<I", 2) + b"\xaa\xbb" + "ab\0\0".encode("utf-16-le")
    fields = tdh.decode_fields(schema, payload)
    assert fields == {"N": 3, "Ids[0]": 10, "Ids[1]": 20, "Ids[2]": 30, "Len": 2, "Blob": "aabb",
                      "Name": "ab"}


def test_structs_and_fixed_count_arrays_flatten():
    schema = tdh.parse_schema(event_info([
        ("Addr", PropertyStruct | PropertyParamFixedCount, 1, 2, 2, 0),  # members 1..2, two elements
        ("Port", 0, tdh.IN_UINT16, 0, 1, 0),
        ("Host", 0, tdh.IN_ANSISTRING, 0, 1, 0),
    ], top_level=1))
    payload = struct.pack("<H", 80) + b"a\0" + struct.pack("<H", 443) + b"b\0"
    assert tdh.decode_fields(schema, payload) == {
        "Addr[0].Port": 80, "Addr[0].Host": "a", "Addr[1].Port": 443, "Addr[1].Host": "b"}


@pytest.mark.parametrize("props, payload", [
    ([("A", 0, tdh.IN_UINT64, 0, 1, 0)], b"\x00" * 7),
    ([("S", 0, tdh.IN_UNICODESTRING, 0, 1, 0)], "abc".encode("utf-16-le")),
    ([("X", PropertyParamCount, tdh.IN_UINT8, 0, 5, 0)], b"\x01"),  # count refers to no property
    ([("N", 0, tdh.IN_UINT32, 0, 1, 0), ("X", PropertyParamCount, tdh.IN_UINT8, 0, 0, 0)],
     struct.pack("<I", 100000)),  # absurd count
    ([("Q", 0, 999, 0, 1, 0)], b"\x00"),  # an in-type nobody defined
])
def test_payloads_that_do_not_fit_their_schema(props, payload):
    with pytest.raises(PayloadError):
        tdh.decode_fields(tdh.parse_schema(event_info(props)), payload)


def test_cache_asks_tdh_once_per_key_and_remembers_failures():
    calls = []

    def fetch(record):
        calls.append(record)
        if record == "bad":
            raise OSError("no schema")
        return event_info([("A", 0, tdh.IN_UINT8, 0, 1, 0)])

    cache = tdh.SchemaCache(fetch)
    first = cache.get(("p", 1, 0), "rec")
    assert cache.get(("p", 1, 0), "rec") is first and calls == ["rec"]
    assert cache.get(("p", 1, 1), "rec") is not None and len(calls) == 2  # another version
    assert cache.get(("p", 2, 0), "bad") is None and cache.get(("p", 2, 0), "bad") is None
    assert calls.count("bad") == 1 and cache.failures == 1 and cache.misses == 3


def test_provider_enumeration_parsing():
    names = [("Microsoft-Windows-DNS-Client", "{1c95126e-7eea-49a9-a3fe-a378b03ddb4d}")]
    base = 8 + 24 * len(names)
    body, strings = b"", b""
    for name, guid in names:
        body += guid_bytes(guid) + struct.pack("<II", 0, base + len(strings))
        strings += u16z(name)
    blob = struct.pack("<II", len(names), 0) + body + strings
    assert tdh.parse_providers(blob) == {"microsoft-windows-dns-client": names[0][1]}
    with pytest.raises(PayloadError):
        tdh.parse_providers(struct.pack("<II", 5, 0))
