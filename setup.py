"""The one compiled part: common/_speedups.c, the agent's byte loops that Python does slowly
(counting a run's lines, rendering runs of plain lines and other events' msgpack bytes as
NDJSON, packing the pipeline's spans). Optional: where it cannot be
built (no C compiler or Python's headers), the install goes on and common/fastpath.py does the
same in Python, with the same results, only slower (docs/benchmarks.md). Everything else about
the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("common._speedups", ["common/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
