"""The one compiled part: common._speedups (common/speedups/*.c: module.c, then one file per
caller), the agent's byte loops that Python does slowly (counting a run's lines, rendering runs
of plain lines and other events' msgpack bytes as NDJSON, the span builder's loop, the eBPF
input's ring buffers and exchanges). Optional: where it cannot be built (no C compiler or Python's headers), the install goes on and common/fastpath.py does the
same in Python, with the same results, only slower (docs/benchmarks.md). Everything else about
the package is in pyproject.toml."""

from setuptools import Extension, setup

SOURCES = ["common/speedups/module.c", "common/speedups/ndjson.c", "common/speedups/spans.c",
           "common/speedups/ebpf.c"]

setup(ext_modules=[Extension("common._speedups", SOURCES, depends=["common/speedups/speedups.h"],
                             optional=True,
                             extra_compile_args=["-O2", "-fvisibility=hidden"])])
