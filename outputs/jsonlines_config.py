"""The ``metrics_jsonl`` output's table (outputs/jsonlines.py is the sink). Its own module so that the
supervisor, which decodes every table, does not import the sink's code."""

from __future__ import annotations

import os
from typing import Annotated

from msgspec import Meta

from common.config import Section, directory_problems


class JsonLinesOutputConfig(Section):
    """``[[outputs.metrics_jsonl]]``."""

    path: str
    """The file to write."""
    name: str = "metrics_jsonl"
    max_bytes: Annotated[int, Meta(ge=4096)] = 100 * 1024 * 1024
    """A file is rotated once it would pass this size."""
    max_files: Annotated[int, Meta(ge=1)] = 5
    """Rotated files kept."""

    def problems(self, **_: object) -> list[str]:
        if not self.path:
            return ["path: give the file to write"]
        if os.path.isdir(self.path):
            return [f"path: {self.path} is a directory, not a file"]
        return directory_problems(os.path.dirname(os.path.abspath(self.path)), key="path")
