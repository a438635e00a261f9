"""The pipeline process: gathers Events from every input queue, gives each its process (the
process table: proctable.py, containers.py, writers.py, enrich.py), batches them (batcher.py) and
fans each batch out to every output queue (runner.py)."""

from pipeline.runner import build

__all__ = ["build"]
