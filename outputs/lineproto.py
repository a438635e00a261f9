"""InfluxDB line protocol: ``measurement,tag=value field=1i,other=2.5,s="text" 1700000000000000000``.

Escaping, as InfluxDB's parser reads it back:

- measurement: ``,`` and space are escaped with a backslash;
- tag keys, tag values and field keys: ``,``, ``=`` and space are escaped;
- string field values: in double quotes, ``"`` and ``\\`` escaped (newlines may stay);
- integers get the ``i`` suffix, floats are written in full precision (``repr``: they read back
  bit for bit; NaN and infinities have no line-protocol form and leave the field out), booleans
  ``true``/``false``; timestamps are nanoseconds.

What line protocol cannot carry at all in a name or tag value is replaced, never sent broken:
a newline, carriage return or NUL becomes a space; a backslash that would be read as an escape
(the last character, or before a space, ``,``, ``=`` or ``"``) becomes ``/``; a name's leading tabs
become ``_`` (InfluxDB skips them before a measurement and before the first field); a name
starting with ``#`` (a comment line) gets a ``_`` in front, as do the key ``time`` (InfluxDB
refuses it as a tag or field key) and empty names. Empty tag values are left out (InfluxDB drops them anyway).
:func:`clean_name` and :func:`clean_tag_value` say what a text becomes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

_NAME_ESCAPE = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_UNSAFE_BACKSLASH = re.compile(r"\\(?=[ ,=\"]|$)")
_NEWLINES = str.maketrans({"\n": " ", "\r": " ", "\0": " "})


def _clean(text: str) -> str:
    text = text.translate(_NEWLINES)
    if "\\" in text:
        text = _UNSAFE_BACKSLASH.sub("/", text)
    return text


def clean_tag_value(text: str) -> str:
    """What a tag value reads back as (see the module's docstring)."""
    return _clean(text)


def clean_name(text: str, *, key: bool = True) -> str:
    """What a measurement (``key=False``), tag key or field key reads back as."""
    text = _clean(text)
    if text.startswith("\t"):  # InfluxDB skips tabs before a measurement or the fields
        bare = text.lstrip("\t")
        text = "_" * (len(text) - len(bare)) + bare
    if not text or (key and text == "time") or text.startswith("#"):
        text = "_" + text
    return text


def escape_measurement(name: str) -> str:
    return clean_name(name, key=False).translate(_NAME_ESCAPE)


def escape_key(key: str) -> str:
    return clean_name(key).translate(_KEY_ESCAPE)


def escape_tag_value(value: str) -> str:
    return _clean(value).translate(_KEY_ESCAPE)


def escape_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_value(value: object) -> str | None:
    """A field value in line protocol; None for a value it cannot hold (NaN, infinity)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return escape_string(str(value))


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, object],
         time_ns: int | None = None) -> str | None:
    """One point (without its newline); None when no field is left to write."""
    parts = []
    for k, v in fields.items():
        text = field_value(v)
        if text is not None:
            parts.append(f"{escape_key(k)}={text}")
    if not parts:
        return None
    head = escape_measurement(measurement)
    for k in sorted(tags):  # InfluxDB's advice: tags sorted by key
        v = tags[k]
        if v != "" and clean_tag_value(v) != "":
            head += f",{escape_key(k)}={escape_tag_value(v)}"
    out = f"{head} {','.join(parts)}"
    return out if time_ns is None else f"{out} {time_ns}"


def lines(points: Iterable[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]
          ) -> bytes:
    """Many points, each ending with a newline."""
    out = [text for p in points if (text := line(*p)) is not None]
    return ("\n".join(out) + "\n").encode("utf-8") if out else b""
