"""Shared by every process of log-shuttle: the Event schema, the shared-memory queue, errors."""
