"""Loading a configuration, for any program of the project: a TOML file, then LOG_SHUTTLE_*
environment variables, then command-line flags, each layer applied to a plain dict that is then
checked as a whole against msgspec Structs, so that every problem (an unknown key, a wrong type,
a missing value) is reported at once, each with its key and, when not from the file, its origin.
The agent (agent/config.py) and the server (server/config.py) each compose their own Structs
(made of common/config.py's Section and checks).

Environment variables name a key by its path, upper case, ``__`` between levels, and an index for
arrays of tables (``LOG_SHUTTLE_PIPELINE__BATCH__MAX_EVENTS=500``,
``LOG_SHUTTLE_INPUTS__FILE__0__PATHS='["/var/log/*.log"]'``). A value is read as a TOML value when
it parses as one (``500``, ``true``, ``["a"]``), else as a string.
"""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from msgspec import Struct

from common.errors import ConfigError

ENV_PREFIX = "LOG_SHUTTLE_"

Layer = tuple[str, list[str], Any]
"""(where it comes from: a variable or "command line", key path, value)."""


def read_toml(path: str) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error becomes a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError([f"file not found: {path}"], source=path) from exc
    except PermissionError as exc:
        raise ConfigError([f"cannot read {path}: permission denied"], source=path) from exc
    except IsADirectoryError as exc:
        raise ConfigError([f"{path} is a directory, not a TOML file"], source=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"], source=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source=path) from exc


def env_overrides(environ: Mapping[str, str]) -> list[Layer]:
    """The LOG_SHUTTLE_* variables as (variable, key path, value), sorted by name."""
    out = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _NOT_CONFIG_VARS:
            continue
        key = var[len(ENV_PREFIX):]
        parts = [p.lower() for p in key.split("__")]
        out.append((var, parts, _parse_env_value(environ[var])))
    return out


# Variables of the LOG_SHUTTLE_ family that are not configuration keys.
_NOT_CONFIG_VARS = frozenset({"LOG_SHUTTLE_CONFIG", "LOG_SHUTTLE_SETUP_TEST",
                              "LOG_SHUTTLE_AUTH_TOKEN"})


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(data: dict[str, Any], parts: list[str], value: Any) -> str | None:
    """Set ``data[parts...] = value``, creating tables; an integer part indexes an array of
    tables and ``*`` stands for each of its elements. Returns a problem string instead of
    raising when the path cannot be followed."""
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part == "*" and not last:
                for element in node:
                    problem = set_path(element, parts[i + 1:], value)
                    if problem:
                        return problem
                return None
            if not part.isdigit():
                return f"{'.'.join(parts[:i])} is an array: expected an index, got {part!r}"
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:i])} is not a table"
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, [] if parts[i + 1].isdigit() or parts[i + 1] == "*" else {})
    return None


def apply_layers(data: dict[str, Any], layers: Iterable[Layer]) -> tuple[list[str], dict[str, str]]:
    """Set each layer's value in ``data``, in order. Returns the problems (paths that cannot be
    followed) and where each key's value came from (dotted key -> variable or command line)."""
    problems: list[str] = []
    origin: dict[str, str] = {}
    for where, parts, value in layers:
        problem = set_path(data, parts, value)
        if problem:
            problems.append(f"{where}: {problem}")
        origin[dotted([p for p in parts if p != "*"])] = where
    return problems, origin


def with_origin(problems: list[str], origin: Mapping[str, str]) -> list[str]:
    """Each ``key: problem`` of ``check`` with ``(from VARIABLE)`` added when its key, or a table
    that holds it, was set by a layer."""
    out = []
    for problem in problems:
        key = problem.split(": ", 1)[0]
        src = next((w for k, w in origin.items() if key == k or key.startswith(k + ".")
                    or key.startswith(k + "[")), None)
        out.append(f"{problem} (from {src})" if src else problem)
    return out


# --- checking a dict against the Structs, collecting every problem -----------------------------


def check(data: Any, cls: type[Struct], path: str = "") -> list[str]:
    """Every problem in ``data`` as a ``cls``, each prefixed with its dotted key."""
    if not isinstance(data, dict):
        return [f"{path or 'configuration'}: expected a table, got {_kind(data)}"]
    problems: list[str] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"{_join(path, key)}: unknown key{hint}")
    for key, field in fields.items():
        where = _join(path, key)
        if key not in data:
            if field.required:
                problems.append(f"{where}: missing (required)")
            continue
        problems += _check_value(data[key], field.type, where)
    return problems


def _check_value(value: Any, tp: Any, where: str) -> list[str]:
    struct = _struct_of(tp)
    if struct is not None:
        return check(value, struct, where)
    item = _list_of_struct(tp)
    if item is not None:
        if not isinstance(value, list):
            return [f"{where}: expected an array of tables, got {_kind(value)}"]
        out: list[str] = []
        for i, v in enumerate(value):
            out += check(v, item, f"{where}[{i}]")
        return out
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        return [f"{where}: {_plain(str(exc))}"]
    return []


def _struct_of(tp: Any) -> type[Struct] | None:
    """The Struct in ``tp`` (a Struct, or Struct | None), else None."""
    if isinstance(tp, type) and issubclass(tp, Struct):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        structs = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, Struct)]
        if len(structs) == 1:
            return structs[0]
    return None


def _list_of_struct(tp: Any) -> type[Struct] | None:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if isinstance(arg, type) and issubclass(arg, Struct):
            return arg
    return None


def dotted(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if p.isdigit() else _join(out, p)
    return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)


def _plain(msg: str) -> str:
    # msgspec says "Expected `int`, got `str`"; drop the "- at `$...`" suffix of nested values
    return msg.replace("`", "").split(" - at ")[0]

