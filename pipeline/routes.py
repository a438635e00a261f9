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
_ALTERNATIVES = (
    r"-?\d+(?:[.,]\d+)*(?:\.[A-Za-z]{1,5})?"  # a number, maybe with a short suffix
    r"|[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"  # UUID
    r"|(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{8,}"  # a hex token with a digit
    r"|(?=(?:[^\d/]*\d){3})(?=[\w-]*[A-Za-z])[\w-]{16,}"  # a long opaque token
)
_SEGMENT = re.compile(rf"(?:{_ALTERNATIVES})", re.ASCII)
_IDS = re.compile(rf"(?<=/)(?:{_ALTERNATIVES})(?=/|$)", re.ASCII)


def is_id(segment: str) -> bool:
    """Whether a path segment looks like an id (see the module's docstring)."""
    return _SEGMENT.fullmatch(segment) is not None


def template(path: str) -> str:
    """``/users/1234/orders/5f3a9c2e?x=1`` -> ``/users/{id}/orders/{id}`` (one pass of one
    regular expression over the path)."""
    if "?" in path:
        path = path[:path.index("?")]
    if "#" in path:
        path = path[:path.index("#")]
    if not path:
        return "/"
    return _IDS.sub(ID, path)


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
