"""The agent's HTTP listener, through the real agent: exact counters (N lines in, N out, lag
back to 0) scraped by a real Prometheus, bounded per-path series, /ready false while a receiver
is down (retries counted) and true again, restarts counted, and `log-shuttle status` / `top`
(the latter in a real terminal, tmux) showing the components and a backlog's progress."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.agent.observe_helpers import LineReceiver, get, get_json, metrics, value
from tests.harness import ROOT, Agent, agent_command, agent_env, wait_for
from tests.server.helpers import free_port

C = "log_shuttle_component_"


def _agent(tmp_path, *args: str, env: dict[str, str] | None = None) -> tuple[Agent, str]:
    address = f"127.0.0.1:{free_port()}"
    agent = Agent(tmp_path, *args, "--http-listen", address,
                  env={**agent_env(), **env} if env else None)
    wait_for(lambda: get(f"http://{address}/health")[0] == 200, what="the listener")
    return agent, address


def test_counters_are_exact_and_prometheus_scrapes_them(tmp_path):
    from tests.outputs.peers import Prometheus

    if not shutil.which("prometheus"):
        pytest.skip("Debian's prometheus is not installed (scripts/setup installs it)")
    logs = tmp_path / "logs"
    logs.mkdir()
    n_per, files = 4000, 5
    for i in range(files):
        (logs / f"app{i}.log").write_bytes(b"".join(b"file %d line %06d\n" % (i, j)
                                                    for j in range(n_per)))
    total = n_per * files
    rx = LineReceiver()
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent.http]\nmax_path_series = 3\n[[inputs.file]]\n'
                      f'paths = ["{logs}/*.log"]\nfrom_beginning = true\n'
                      f'[[outputs.tcp]]\naddress = "127.0.0.1:{rx.port}"\n')
    agent, address = _agent(tmp_path, "--config", str(config))
    prom = None
    try:
        wait_for(lambda: rx.lines() >= total, what=f"{total} lines at the receiver")

        def settled():
            ms = metrics(address)
            lag = value(ms, C + "file_lag_bytes")
            sent = [value(ms, C + "sent_events_total", component=role)
                    for role in ("input file", "pipeline", "output tcp")]
            return ms if lag == 0 and sent == [total] * 3 else None  # each publishes in turn

        ms = wait_for(settled, timeout=10, what="the counters to settle")
        assert value(ms, C + "received_events_total", component="input file") == total
        assert value(ms, C + "received_events_total", component="pipeline") == total
        assert value(ms, C + "sent_events_total", component="pipeline") == total
        assert value(ms, C + "sent_bytes_total", component="output tcp") == len(rx.data)
        assert value(ms, C + "received_bytes_total", component="input file") == \
            sum(f.stat().st_size for f in logs.iterdir())
        assert value(ms, C + "files_watched") == files
        assert value(ms, C + "output_retries_total", component="output tcp") == 0
        # Per-path series are bounded: 3 paths, then one aggregate.
        paths = {dict(ls)["path"] for (n, ls) in ms if n == C + "file_lag_bytes"}
        assert len(paths) == 4 and "_other" in paths, paths
        for role in ("input file", "pipeline", "output tcp", "supervisor", "http"):
            assert value(ms, C + "process_resident_memory_bytes", component=role) > 1e6, role
        assert value(ms, "log_shuttle_build_info") == 1
        assert get_json(f"http://{address}/ready") == (200, {"ready": True, "why_not": []})

        prom = Prometheus(tmp_path, [address], interval=0.5)

        def scraped():
            r = prom.query(f'{C}sent_events_total{{component="output tcp"}}')
            return r if r and float(r[0]["value"][1]) == total else None

        wait_for(scraped, timeout=30, interval=0.5, what="Prometheus to scrape the agent")
        lag = prom.query(f"sum({C}file_lag_bytes)")
        assert float(lag[0]["value"][1]) == 0
        got = prom.query(f'{C}received_events_total{{component="input file"}}')
        assert float(got[0]["value"][1]) == total
        assert [t["health"] for t in prom.targets()] == ["up"]
    finally:
        if prom is not None:
            prom.stop()
        try:
            assert agent.stop() == 0, agent.stderr()
        finally:
            rx.stop()
    # The run directory is gone with the agent.
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_a_receiver_down_shows_retries_and_not_ready_then_ready_again(tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    agent, address = _agent(tmp_path, "-f", str(log), "--from-beginning",
                            "--output-tcp", f"127.0.0.1:{port}")
    rx = None
    try:
        def not_ready():
            code, body = get_json(f"http://{address}/ready")
            return body if code == 503 and "failing to deliver" in " ".join(
                body.get("why_not", [])) else None

        body = wait_for(not_ready, what="/ready to say the output fails")
        assert body["ready"] is False
        assert "output tcp" in body["why_not"][0] and "connect" in body["why_not"][0]
        ms = wait_for(lambda: (m := metrics(address)) and
                      (value(m, C + "output_retries_total") or 0) >= 2 and
                      value(m, C + "file_lag_bytes") is not None and m,
                      what="retries counted")
        assert value(ms, C + "errors_total", component="output tcp", error_type="connect") >= 2
        assert value(ms, C + "delivering", component="output tcp") == 0
        assert value(ms, C + "file_lag_bytes") == log.stat().st_size  # nothing acknowledged
        rx = LineReceiver(port)
        wait_for(lambda: get(f"http://{address}/ready")[0] == 200, timeout=60,
                 what="/ready once the receiver is back")
        wait_for(lambda: rx.lines() >= 1000, what="the lines")
        wait_for(lambda: value(metrics(address), C + "file_lag_bytes") == 0, what="lag 0")
        assert value(metrics(address), C + "sent_events_total", component="output tcp") == 1000
    finally:
        try:
            assert agent.stop() == 0, agent.stderr()
        finally:
            if rx is not None:
                rx.stop()


def test_a_restarted_child_is_counted_and_its_totals_add_up(tmp_path):
    rx = LineReceiver()
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(500)))
    agent, address = _agent(tmp_path, "-f", str(log), "--from-beginning",
                            "--output-tcp", f"127.0.0.1:{rx.port}")
    try:
        wait_for(lambda: value(metrics(address), C + "sent_events_total",
                               component="output tcp") == 500, what="500 sent")
        os.kill(agent.children()["log-shuttle: output tcp"], signal.SIGKILL)
        wait_for(lambda: value(metrics(address), C + "child_restarts_total",
                               component="output tcp") == 1, what="the restart counted")
        with open(log, "ab") as f:
            f.write(b"".join(b"more %d\n" % i for i in range(300)))
        # The killed process's counters stay; its successor's add to them.
        wait_for(lambda: value(metrics(address), C + "sent_events_total",
                               component="output tcp") == 800, what="800 sent")
    finally:
        try:
            assert agent.stop() == 0, agent.stderr()
        finally:
            rx.stop()


def _status(address: str) -> str:
    out = subprocess.run([*agent_command("status", "-a", address, "--interval", "2")],
                         env=agent_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_status_and_top_show_the_components_and_a_backlogs_progress(tmp_path):
    log = tmp_path / "big.log"
    n = 30_000
    log.write_bytes(b"".join(b"a backlog line %07d ..........................\n" % i
                             for i in range(n)))  # 1.4 MiB, ~6 MB as NDJSON
    rx = LineReceiver(rate=500_000)  # a slow receiver: the backlog takes ~12 s
    config = tmp_path / "agent.toml"  # small reads and messages: acknowledged often
    config.write_text(f'[[inputs.file]]\npaths = ["{log}"]\nfrom_beginning = true\n'
                      f'read_bytes = 16384\nsend_bytes = 16384\n[[outputs.tcp]]\naddress = "127.0.0.1:{rx.port}"\n')
    agent, address = _agent(tmp_path, "--config", str(config))
    session = f"ls-top-{os.getpid()}"
    try:
        wait_for(lambda: rx.lines() > 1000, what="lines flowing")
        # an estimate needs the backlog seen shrinking between two of the agent's samples
        last = [""]

        def estimated():
            last[0] = text = _status(address)
            return text if "done in about" in text else None

        try:
            text = wait_for(estimated, timeout=20, interval=0.5, what="status with an estimate")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{last[0]}") from None
        for role in ("input file", "pipeline", "output tcp"):
            assert role in text, text
        assert "backlog" in text and "caught up" in text, text
        if shutil.which("tmux"):
            env = " ".join(f"{k}={v}" for k, v in (("PYTHONPATH", ROOT),))
            # The pane's own size, not what the test's environment says (pytest sets COLUMNS).
            cmd = f"env -u COLUMNS -u LINES {env} {' '.join(agent_command('top', '-a', address))}"
            subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y",
                            "40", cmd], check=True)

            last = [""]

            def screen():
                last[0] = out = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                               capture_output=True, text=True).stdout
                return out if "ETA" in out and "output tcp" in out and "%" in out else None

            try:
                shown = wait_for(screen, timeout=20, interval=0.5, what="top's screen")
            except AssertionError:
                raise AssertionError(f"top's screen:\n{last[0]}") from None
            assert "backlog" in shown and "pipeline" in shown, shown
            subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        wait_for(lambda: rx.lines() >= n, timeout=60, what="the backlog delivered")
        wait_for(lambda: value(metrics(address), C + "file_lag_bytes") == 0, what="lag 0")
        assert "backlog" not in _status(address)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        try:
            assert agent.stop() == 0, agent.stderr()
        finally:
            rx.stop()


def test_status_without_an_agent_says_how_to_start_one():
    out = subprocess.run([*agent_command("status", "-a", f"127.0.0.1:{free_port()}")],
                         env=agent_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "no agent answers" in out.stderr and "--http-listen" in out.stderr


def test_status_finds_the_listener_where_the_agent_s_own_settings_put_it(tmp_path):
    """`status` asks the address the agent itself would listen on: its environment variable,
    else the configuration that LOG_SHUTTLE_CONFIG names (not only --address/--config)."""
    by_env, by_file = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent.http]\nlisten = "{by_file}"\n[[inputs.file]]\npaths = ["/x"]\n')
    server_only = tmp_path / "server.toml"  # the server's file, through the same variable
    server_only.write_text('[server]\nlisten_tcp = "127.0.0.1:6514"\n')
    for env, asked in [({"LOG_SHUTTLE_AGENT__HTTP__LISTEN": by_env}, by_env),
                       ({"LOG_SHUTTLE_CONFIG": str(config)}, by_file),
                       ({"LOG_SHUTTLE_CONFIG": str(server_only)}, "127.0.0.1:9595")]:
        out = subprocess.run([*agent_command("status")], env={**agent_env(), **env}, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and asked in out.stderr, (env, out.stderr)


def test_a_remote_listen_address_is_refused_unless_allowed(tmp_path):
    from agent.config import load_config
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="not a loopback address"):
        load_config(None, overrides=[(["inputs", "file"], [{"paths": ["/x"]}]),
                                     (["agent", "http", "listen"], "0.0.0.0:9595")])
    cfg = load_config(None, overrides=[(["inputs", "file"], [{"paths": ["/x"]}]),
                                       (["agent", "http", "listen"], "0.0.0.0:9595"),
                                       (["agent", "http", "allow_remote"], True)])
    assert cfg.agent.http.listen == "0.0.0.0:9595"
    with pytest.raises(ConfigError, match="the port must be a number in 1-65535"):
        load_config(None, overrides=[(["inputs", "file"], [{"paths": ["/x"]}]),
                                     (["agent", "http", "listen"], "127.0.0.1:0")])


@pytest.mark.parametrize("to", ["supervisor", "group"])
def test_a_stuck_output_is_not_ready_and_ready_says_stopping_through_a_drain(tmp_path, to):
    """An output whose receiver accepted the connection and reads nothing: no error, no retry,
    one send that never ends; /ready says it is stalled (stalled_after). Then SIGTERM: the
    drain lasts until its deadline, and all along /ready answers 503 "the agent is stopping"
    (the listener used to be stopped with the inputs, first: no answer at all during a
    drain). The SIGTERM goes to the supervisor, or to the whole process group, as systemd's
    default KillMode and `timeout` send it."""
    import socket

    log = tmp_path / "app.log"
    with open(log, "wb") as f:
        for i in range(300_000):  # ~30 MB: more than the socket buffers hold
            f.write(b"%099d\n" % i)
    rx = socket.create_server(("127.0.0.1", 0))
    held = []
    rx.settimeout(30)
    agent, address = _agent(tmp_path, "-f", str(log), "--from-beginning", "--output-tcp",
                            f"127.0.0.1:{rx.getsockname()[1]}", "--drain-timeout", "4",
                            env={"LOG_SHUTTLE_AGENT__HTTP__STALLED_AFTER": "2"})
    try:
        held.append(rx.accept()[0])  # and never read from

        def stalled():
            code, body = get_json(f"http://{address}/ready")
            return body if code == 503 and "stalled" in " ".join(body.get("why_not", [])) \
                else None

        body = wait_for(stalled, timeout=30, what="/ready to say the output is stalled")
        assert body["why_not"][0].startswith("output tcp: stalled: one send has taken")
        assert value(metrics(address), C + "sending_seconds", component="output tcp") >= 2
        if to == "group":
            os.killpg(agent.pid, signal.SIGTERM)
        else:
            agent.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()

        def stopping():
            code, body = get_json(f"http://{address}/ready")
            return body if code == 503 and "the agent is stopping" in body.get("why_not", []) \
                else None

        assert wait_for(stopping, timeout=3, what="/ready to say the agent is stopping")
        time.sleep(1.5)
        assert agent.proc.poll() is None and time.monotonic() - t0 < 3.5  # still draining...
        assert get(f"http://{address}/health")[0] == 200  # ...and the listener still answers
        agent.proc.wait(timeout=30)
        assert "the drain deadline passed" in agent.stderr()
    finally:
        for c in held:
            c.close()
        rx.close()
