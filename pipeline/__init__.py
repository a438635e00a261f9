"""The pipeline process: gathers Events from every input queue into batches and fans each batch
out to every output queue. (Process-table correlation joins it in a later step.)"""

from pipeline.runner import build

__all__ = ["build"]
