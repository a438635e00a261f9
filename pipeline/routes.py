"""Route templates: an HTTP path with its ids folded, so that ``/users/1234`` and ``/users/98``
are one series, ``/users/{id}``.

A path segment becomes ``{id}`` when it is

- a number (``1234``, ``-5``, ``3.14``) or a number with a suffix of at most 5 letters after a
  dot (``1234.json``);
- a UUID (``0f8fad5b-d9cb-469f-a165-70867728950e``, any case, with or without its dashes);
- a hex token: 8 or more hexadecimal digits with at least one decimal digit among them
  (``5f3a9c2e``, a SHA, a Mongo object id), so that words such as ``deadbeef`` or ``facade``
  stay;
- a long opaque token: 16 or more characters of letters, digits, ``-`` and ``_`` that mix
  letters and at least 3 digits (a base64url or ULID-like id).

The query string and fragment are dropped; an empty path is ``/``. Templating is a pure function
of the path, and :class:`RouteCache` keeps the last results (paths repeat: a server's hot routes).
"""

from __future__ import annotations

import re

ID = "{id}"
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.[A-Za-z]{1,5})?")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?"
                   r"[0-9A-Fa-f]{12}")
_HEX = re.compile(r"(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}")
_TOKEN = re.compile(r"(?=(?:[^\d]*\d){3})(?=[\w-]*[A-Za-z])[\w-]{16,}", re.ASCII)


def is_id(segment: str) -> bool:
    """Whether a path segment looks like an id (see the module's docstring)."""
    if not segment:
        return False
    first = segment[0]
    if (first.isdigit() or first == "-") and _NUMBER.fullmatch(segment):
        return True
    n = len(segment)
    if n in (32, 36) and _UUID.fullmatch(segment):
        return True
    if n >= 8 and _HEX.fullmatch(segment):
        return True
    return n >= 16 and _TOKEN.fullmatch(segment) is not None


def template(path: str) -> str:
    """``/users/1234/orders/5f3a9c2e?x=1`` -> ``/users/{id}/orders/{id}``."""
    for sep in ("?", "#"):
        cut = path.find(sep)
        if cut >= 0:
            path = path[:cut]
    if not path:
        return "/"
    parts = path.split("/")
    changed = False
    for i, part in enumerate(parts):
        if part and is_id(part):
            parts[i] = ID
            changed = True
    return "/".join(parts) if changed else path


class RouteCache:
    """``template`` with the results of up to ``size`` paths kept (cleared whole when full: a
    flood of distinct paths costs one templating each, and memory stays bounded)."""

    def __init__(self, *, size: int = 65536) -> None:
        self.size = size
        self._cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        route = self._cache.get(path)
        if route is None:
            if len(self._cache) >= self.size:
                self._cache.clear()
            route = self._cache[path] = template(path)
        return route
