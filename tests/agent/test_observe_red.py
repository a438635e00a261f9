"""The RED metrics' Prometheus output shares its exposition with the agent's listener: what it
holds is also served at the listener's /metrics (beside the agent's own metrics), checked by
promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.observe.listener import RED_EXPOSITION, View
from agent.observe.rundir import RunDir
from common.events import Batch
from outputs.base import Verdict
from outputs.promsink import PrometheusSink
from tests.outputs.metric_load import load


def test_the_red_exposition_is_served_by_the_agents_listener():
    rundir = RunDir.create()
    sink = PrometheusSink(host="127.0.0.1", port=0)
    try:
        sink.share = f"{rundir.path}/{RED_EXPOSITION}"
        intervals, _, _ = load(300)
        for points in intervals:
            assert sink.send(Batch(events=points)) is Verdict.OK
        text = View(rundir=rundir.path, version="test").exposition().decode()
        own = sink.render().decode()
        assert own and own in text  # the sink's exposition, whole
        assert "# TYPE http_server_request_duration_seconds histogram" in text
        assert "log_shuttle_build_info" in text  # beside the agent's own
        if shutil.which("promtool") is None:
            pytest.skip("promtool (Debian's prometheus) is not installed")
        check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        sink.close()
        rundir.remove()
