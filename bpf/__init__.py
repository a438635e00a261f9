"""The BPF C programs of the eBPF input: one file per probe (process.c, tcp.c, http.c, logwrite.c) and the
header they share for the event layouts (events.h). No Python here besides where they are."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
"""The directory holding the C files (given to BCC as an include path)."""

PROBES = ("process", "tcp", "http", "logwrite")
"""The probes, each a file ``<name>.c`` in DIR (logwrite: loaded by the eBPF input when it
follows log files, after http, whose public map it reads)."""
