"""The ``stdout`` output's table (outputs/stdout.py is the sink). Its own module so that the
supervisor, which decodes every table, does not import the sink's code."""

from __future__ import annotations

from typing import Literal

from common.config import Section


class StdoutOutputConfig(Section):
    """The ``[outputs.stdout]`` table."""

    format: Literal["ndjson", "text"] = "ndjson"
    state_dir: str = ""
    """Where this output sets aside batches it can never deliver (its dead-letter file); empty:
    the agent's state_dir."""
