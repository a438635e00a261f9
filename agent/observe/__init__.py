"""Seeing inside a running agent (docs/operating.md).

- ``rundir``: the per-run directory the supervisor makes (prometheus_client's multiprocess
  files, the table of children) and removes;
- ``snapshot``: what a component's own counters say, as metric samples (read, never counted
  again: nothing here is on the per-line path);
- ``publish``: the thread in every component process that moves those samples into
  prometheus_client's multiprocess files once a second and at exit;
- ``listener``: the HTTP listener process (``/metrics``, ``/health``, ``/ready``, ``/status``);
- ``status``: ``log-shuttle status`` and ``log-shuttle top``.
"""
