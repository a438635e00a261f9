"""BLAKE2b without OpenSSL. Importing ``hashlib`` loads OpenSSL's libcrypto (about 3.4 MiB of
RSS in every process that imports it, and most dashboards add up RSS over the agent's processes),
even for BLAKE2b, which CPython implements itself in its ``_blake2`` module: that is the one used
here (the same function ``hashlib.blake2b`` is)."""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

__all__ = ["blake2b"]
