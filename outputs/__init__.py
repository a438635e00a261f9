"""Outputs: one process per configured destination, each reading batches from its own queue."""
