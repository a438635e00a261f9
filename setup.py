"""The one compiled part: outputs/_ndjson.c, the NDJSON renderer's fast path for runs of plain
lines. Optional: where it cannot be built (no C compiler or Python headers), the install goes on
and outputs/ndjson.py renders those lines in Python, into the same bytes (only slower); `log-shuttle
doctor` says which one runs. Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("outputs._ndjson", ["outputs/_ndjson.c"], optional=True,
                             extra_compile_args=["-O2"])])
