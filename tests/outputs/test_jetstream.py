"""The JetStream output against a real 3-node NATS cluster on loopback (Debian's nats-server):
exactly once in the stream across kill -9 of the agent and of the stream's leader, the agent
holding while the stream refuses (limits, lost quorum), and the checks at start."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from common.component import BootError
from common.events import Batch, HttpEvent, LogEvent, LossEvent, SpanEvent
from common.identity import Identity
from outputs.base import Verdict
from outputs.jetstream import JetStreamOutputConfig, sink_from_config, subject_token
from tests.harness import agent_env, complete_lines, wait_for
from tests.inputs.test_file_durability import run_agent, start_writer, started
from tests.nats_cluster import NATS_SERVER, NatsCluster, run, stream_messages, stream_state
from tests.server.helpers import Server

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER),
                                reason="nats-server is not installed (scripts/setup installs it)")

LINE_BYTES = 74
"""tests/writer.py's lines: ``seq NNNNNNNN `` and 60 bytes of padding."""
SEQ = re.compile(rb'"line":"seq (\d{8}) ')


def agent_config(tmp: Path, log: Path, urls: list[str], **jet) -> Path:
    opts = {"servers": urls, "stream": "LOGS", "create_stream": True, "replicas": 3,
            "ack_timeout": 2.0, "backoff_max": 1.0, **jet}
    body = ["[[inputs.file]]", f"paths = [{json.dumps(str(log))}]", "checkpoint_interval = 0.2",
            "[[outputs.jetstream]]"] + [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    cfg = tmp / "agent.toml"
    cfg.write_text("\n".join(body) + "\n")
    return cfg


def seqs(messages) -> list[int]:
    out = []
    for _, data, _ in messages:
        m = SEQ.search(data)
        assert m, data[:200]
        out.append(int(m.group(1)))
    return out


def assert_exactly_once(messages, total: int) -> None:
    got = seqs(messages)
    counts = collections.Counter(got)
    missing = [s for s in range(total) if s not in counts]
    dups = {s: c for s, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    assert not dups, f"{len(dups)} duplicated, first {list(dups.items())[:10]}"
    assert len(messages) == total
    # every message carries its record id as Nats-Msg-Id, and the ids are all different
    ids = [h.get("Nats-Msg-Id") for _, _, h in messages]
    assert all(ids) and len(set(ids)) == total


def count(cluster: NatsCluster, tries: int = 1) -> int:
    for attempt in range(tries):
        try:
            return run(stream_state(cluster.urls, "LOGS"))["messages"]
        except Exception:  # noqa: BLE001 - the cluster may be electing a leader
            if attempt < tries - 1:
                time.sleep(0.3)
    return -1


def consumer(tmp: Path, cluster: NatsCluster, name: str, durable: str = "servers") -> Server:
    """``log-shuttle server --from-jetstream`` with the durable consumer ``durable``."""
    args = [a for url in cluster.urls for a in ("--from-jetstream", url)]
    return Server(tmp, *args, "--jetstream-consumer", durable, name=name,
                  env=agent_env(LOG_SHUTTLE_SERVER__JETSTREAM_ACK_WAIT="2"))


def server_seqs(servers: list[Server]) -> list[int]:
    out = []
    for server in servers:
        for path in sorted(server.dir.glob("received*.ndjson")):
            data = path.read_bytes()
            out += [int(m.group(1)) for m in SEQ.finditer(data[: data.rfind(b"\n") + 1])]
    return out


def test_kill_rounds_of_agent_and_leader_leave_every_line_once_in_the_stream(tmp_path):
    """A sequence-numbered writer (3,000 lines/s, through the rounds); the agent SIGKILLed 5
    times (its whole process group) and started again on its state directory; the stream's
    leader SIGKILLed once and restarted. The stream
    (3 replicas) holds every line exactly once: replays carry the same Nats-Msg-Id. A server
    consuming the stream (SIGKILLed once and started again: what it wrote and had not
    acknowledged comes again) holds every line exactly once in its files too."""
    total, rate = 60_000, 3_000  # lines keep coming through the kill rounds (20 s)
    log = tmp_path / "app.log"
    state = tmp_path / "state"
    rng = random.Random(18)
    with NatsCluster(tmp_path / "nats") as cluster:
        cfg = agent_config(tmp_path, log, cluster.urls)
        run(_make_stream(cluster.urls))
        servers: list[Server] = [consumer(tmp_path, cluster, "server")]  # consumes from the start
        writer = start_writer(log, total, rate)
        leader_killed = None
        at_kill: list[tuple[int, int]] = []
        try:
            for i in range(5):
                proc = run_agent(tmp_path / f"round{i}.out", state, "--config", str(cfg),
                                 "--from-beginning")
                started(proc)
                if i == 1:  # the stream's leader dies under load, and comes back
                    leader_killed = cluster.leader("LOGS")
                    cluster.kill(leader_killed)
                if i == 3:  # a consuming server dies between writes and acks, and comes back
                    servers[0].proc.send_signal(signal.SIGKILL)
                    servers[0].proc.wait()
                    servers[0].start()
                time.sleep(rng.uniform(0.5, 1.2))
                at_kill.append((count(cluster, tries=10), log.stat().st_size // LINE_BYTES))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if leader_killed is not None and leader_killed not in cluster.alive():
                    cluster.start(leader_killed)
        finally:
            writer.wait(timeout=60)
        proc = run_agent(tmp_path / "final.out", state, "--config", str(cfg), "--from-beginning")
        try:
            started(proc)
            wait_for(lambda: count(cluster) >= total, timeout=60,
                     what=f"{total} messages in the stream")
            time.sleep(1.0)  # anything more would be a duplicate: give it time to show
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        messages = run(stream_messages(cluster.urls, "LOGS"))
        try:
            wait_for(lambda: len(set(server_seqs(servers))) >= total, timeout=40, interval=0.3,
                     what="every line in the servers' files")
            time.sleep(0.5)
        finally:
            for server in servers:
                assert server.stop() == 0
    # the kills landed while the agent was publishing (what it had not checkpointed came again)
    # kills that landed with lines written and not yet at the destination
    assert sum(0 < got < written for got, written in at_kill) >= 2, at_kill
    assert_exactly_once(messages, total)
    in_files = collections.Counter(server_seqs(servers))
    assert set(in_files) == set(range(total))
    assert max(in_files.values()) == 1, [s for s, c in in_files.items() if c > 1][:10]
    assert servers[0].stats().get("jetstream_messages", 0) > 0


def test_servers_sharing_one_consumer_split_the_stream(tmp_path):
    """Two servers with one durable consumer: each writes a share, together every line once."""
    total = 8_000
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"seq %08d %s\n" % (i, b"x" * 60) for i in range(total)))
    with NatsCluster(tmp_path / "nats") as cluster:
        cfg = agent_config(tmp_path, log, cluster.urls)
        run(_make_stream(cluster.urls))
        servers = [consumer(tmp_path, cluster, f"server{k}", "shared") for k in range(2)]
        proc = run_agent(tmp_path / "agent.out", tmp_path / "state", "--config", str(cfg),
                         "--from-beginning")
        try:
            started(proc)
            wait_for(lambda: len(server_seqs(servers)) >= total, timeout=40, interval=0.3,
                     what="every line in the servers' files")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            for server in servers:
                assert server.stop() == 0
    assert sorted(server_seqs(servers)) == list(range(total))
    shares = [len(server_seqs([s])) for s in servers]
    assert all(shares), shares


def test_the_agent_holds_while_the_stream_refuses_and_loses_nothing(tmp_path):
    """The stream full (max_bytes, discard new): the agent holds, its checkpoints stay, nothing
    is lost; the limit raised, it goes on. Then quorum lost (2 of 3 nodes down): it holds again;
    the nodes back, every line is in the stream exactly once."""
    total = 6_000
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"seq %08d %s\n" % (i, b"x" * 60) for i in range(total // 2)))
    state = tmp_path / "state"
    with NatsCluster(tmp_path / "nats") as cluster:
        cfg = agent_config(tmp_path, log, cluster.urls, max_bytes=200_000)
        proc = run_agent(tmp_path / "agent.out", state, "--config", str(cfg), "--from-beginning")
        try:
            started(proc)
            # the stream fills up to its limit and refuses the rest
            wait_for(lambda: count(cluster) > 0, timeout=30, what="messages")
            time.sleep(3)
            held = count(cluster)
            assert 0 < held < total // 2
            time.sleep(1.5)
            assert count(cluster) == held and proc.poll() is None
            err = Path(f"{tmp_path / 'agent.out'}.stderr").read_text()
            assert "the stream refuses" in err or "maximum bytes" in err, err[-2000:]
            run(_update_max_bytes(cluster.urls, -1))
            wait_for(lambda: count(cluster) == total // 2, timeout=30, what="the rest")
            # quorum lost: 2 of 3 nodes down
            down = [i for i in cluster.alive()][:2]
            for i in down:
                cluster.kill(i)
            with open(log, "ab") as f:
                f.write(b"".join(b"seq %08d %s\n" % (i, b"x" * 60)
                                 for i in range(total // 2, total)))
            time.sleep(4)
            assert proc.poll() is None
            for i in down:
                cluster.start(i)
            # What is tested is that every line arrives once, not how soon a loaded host's
            # cluster elects its leaders again (once past 45 s in CI): a wide bound, and the
            # agent's account when even that is not enough.
            try:
                wait_for(lambda: count(cluster) >= total, timeout=120, what="every line")
            except AssertionError as exc:
                err = Path(f"{tmp_path / 'agent.out'}.stderr").read_text()
                raise AssertionError(f"{exc}: {count(cluster)} of {total} in the stream; "
                                     f"the agent said:\n{err[-3000:]}") from exc
            time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        messages = run(stream_messages(cluster.urls, "LOGS"))
    assert_exactly_once(messages, total)


async def _make_stream(urls):
    """The R3 stream LOGS. A cluster that just elected its meta leader sometimes leaves the first
    create unanswered (a 20 s timeout in CI), or does not know all its peers yet ("no suitable
    peers for placement", once in CI): ask again, and take a stream a late answer made."""
    import asyncio

    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=10)
        for attempt in range(4):
            try:
                await js.add_stream(StreamConfig(
                    name="LOGS", subjects=["logs.*.*"], num_replicas=3, duplicate_window=120))
                return
            except BadRequestError as exc:
                if "no suitable peers" not in str(exc) or attempt == 3:
                    raise
                await asyncio.sleep(2.0)
            except NatsTimeout:
                try:
                    await js.stream_info("LOGS")
                    return
                except (NatsTimeout, NotFoundError):
                    if attempt == 3:
                        raise
    finally:
        await nc.close()


async def _update_max_bytes(urls, value):
    import nats

    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        info = await js.stream_info("LOGS")
        info.config.max_bytes = value
        await js.update_stream(info.config)
    finally:
        await nc.close()


def _batch(n: int, fid: int = 7) -> Batch:
    data = b"".join(b"line %d\n" % i for i in range(n))
    return Batch(events=[LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=0, data=data,
                                  lines=n, read_ns=1, fid=fid)])


def test_a_batch_sent_twice_is_stored_once_on_the_subject_of_its_host_and_kind(tmp_path):
    with NatsCluster(tmp_path / "nats", nodes=1) as cluster:
        cfg = JetStreamOutputConfig(servers=cluster.urls, create_stream=True,
                                    subject="app.{host}.{kind}")
        sink = sink_from_config(cfg, host="web.1 a", identity=Identity("0" * 16, "s"))
        try:
            assert sink.send(_batch(500)) is Verdict.OK
            assert sink.send(_batch(500)) is Verdict.OK  # a replay
            assert (sink.stats.published, sink.stats.duplicates) == (500, 500)
            messages = run(stream_messages(cluster.urls, "LOGS"))
        finally:
            sink.close()
    assert len(messages) == 500
    assert json.loads(messages[3][1])["line"] == "line 3"
    assert messages[3][2]["Nats-Msg-Id"] == json.loads(messages[3][1])["id"]
    assert subject_token("web.1 a") == "web_1_a"


def test_events_go_on_the_subject_of_their_kind_and_a_span_without_an_id(tmp_path):
    async def subjects(urls: list[str]) -> dict[str, int]:
        import nats

        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            info = await nc.jetstream().stream_info("LOGS", subjects_filter=">")
            return dict(info.state.subjects or {})
        finally:
            await nc.close()

    events = [*_batch(2).events,
              HttpEvent(1, 7, 7, "srv", 3, "server", "GET", "/x", 200, seq=5),
              SpanEvent(1, 2, "a" * 32, "b" * 16, name="GET"),
              LossEvent(1, "input ebpf", "ring buffer http", 3, seq=6)]
    with NatsCluster(tmp_path / "nats", nodes=1) as cluster:
        cfg = JetStreamOutputConfig(servers=cluster.urls, create_stream=True,
                                    subject="app.{host}.{kind}")
        sink = sink_from_config(cfg, host="h", identity=Identity("0" * 16, "s"))
        try:
            assert sink.send(Batch(events=events)) is Verdict.OK
            messages = run(stream_messages(cluster.urls, "LOGS"))
            by_subject = run(subjects(cluster.urls))
        finally:
            sink.close()
    assert by_subject == {"app.h.log": 2, "app.h.http": 1, "app.h.span": 1, "app.h.loss": 1}
    kinds = [json.loads(data).get("type", "log") for _, data, _ in messages]
    assert kinds == ["log", "log", "http", "span", "loss"]
    ids = [(headers or {}).get("Nats-Msg-Id") for _, _, headers in messages]
    assert all(ids[:3]) and ids[3] is None and ids[4]  # a span has no record id
    assert ids[2] == "0000000000000000.s-0.5"


def test_a_missing_stream_or_subject_is_a_clear_error(tmp_path):
    with NatsCluster(tmp_path / "nats", nodes=1) as cluster:
        cfg = JetStreamOutputConfig(servers=cluster.urls, stream="NOPE")
        sink = sink_from_config(cfg, host="h", identity=None)
        try:
            with pytest.raises(BootError, match="the stream 'NOPE' does not exist"):
                sink.send(_batch(1))
        finally:
            sink.close()
        made = JetStreamOutputConfig(servers=cluster.urls, stream="OTHER", create_stream=True,
                                     stream_subjects=["other.>"])
        sink = sink_from_config(made, host="h", identity=None)
        try:
            with pytest.raises(BootError, match="does not take the subject 'logs.h.log'"):
                sink.send(_batch(1))
        finally:
            sink.close()


def test_no_server_is_a_retry_and_bad_options_stop_at_build(tmp_path):
    cfg = JetStreamOutputConfig(servers=["nats://127.0.0.1:1"], connect_timeout=0.5)
    sink = sink_from_config(cfg, host="h", identity=None)
    try:
        assert sink.send(_batch(1)) is Verdict.RETRY
    finally:
        sink.close()
    for bad, message in ((dict(servers=["127.0.0.1:4222"]), "is not nats://"),
                         (dict(subject="logs.{hots}"), "only {host} and {kind}"),
                         (dict(creds_file=str(tmp_path / "none.creds")), "creds_file: no such"),
                         (dict(tls_ca=str(tmp_path / "none.pem")), "tls_ca: no such file"),
                         (dict(user="u", creds_file=__file__), "give one of a token")):
        opts = {"servers": ["nats://127.0.0.1:4222"], **bad}
        with pytest.raises(BootError, match=re.escape(message)):
            sink_from_config(JetStreamOutputConfig(**opts), host="h", identity=None)


def test_token_auth(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with NatsCluster(tmp_path / "nats", nodes=1,
                     extra='authorization { token: "s3cret" }') as cluster:
        good = sink_from_config(JetStreamOutputConfig(
            servers=cluster.urls, create_stream=True, auth_token_file=str(token)),
            host="h", identity=None)
        try:
            assert good.send(_batch(3)) is Verdict.OK
        finally:
            good.close()
        bad = sink_from_config(JetStreamOutputConfig(servers=cluster.urls, connect_timeout=1),
                               host="h", identity=None)
        try:
            assert bad.send(_batch(3)) is Verdict.RETRY
        finally:
            bad.close()



def test_tls_with_user_and_password(tmp_path):
    """The cluster's node with TLS (a certificate of the tests' own CA) and a user: the output
    verifies the server with tls_ca and logs in; a wrong password is a RETRY, not a crash."""
    from tests.server.helpers import make_pki

    pki = make_pki(tmp_path)
    password = tmp_path / "password"
    password.write_text("pa55\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    extra = (f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}" }}\n'
             'authorization { users: [ { user: "shipper", password: "pa55" } ] }')
    with NatsCluster(tmp_path / "nats", nodes=1, extra=extra) as cluster:
        opts = dict(servers=cluster.urls, create_stream=True, tls_ca=str(pki.ca),
                    user="shipper", connect_timeout=2)
        good = sink_from_config(JetStreamOutputConfig(**opts, password_file=str(password)),
                                host="h", identity=Identity("0" * 16, "s"))
        try:
            assert good.send(_batch(20)) is Verdict.OK
            assert good.stats.published == 20
        finally:
            good.close()
        bad = sink_from_config(JetStreamOutputConfig(**opts, password_file=str(wrong)),
                               host="h", identity=None)
        try:
            assert bad.send(_batch(3)) is Verdict.RETRY
        finally:
            bad.close()
        untrusted = sink_from_config(JetStreamOutputConfig(
            servers=cluster.urls, tls=True, user="shipper", password_file=str(password),
            connect_timeout=2), host="h", identity=None)  # the system CAs: not ours
        try:
            assert untrusted.send(_batch(3)) is Verdict.RETRY
        finally:
            untrusted.close()


def test_creds_file_auth_against_a_server_in_operator_mode(tmp_path):
    """Decentralized auth (JWTs signed by an operator and an account, tests/nats_jwt.py): the
    output logs in with a user's .creds file and its batch is stored; a user of an account the
    server does not know is refused, a RETRY."""
    from tests.nats_jwt import decentralized

    auth = decentralized(tmp_path)
    with NatsCluster(tmp_path / "nats", nodes=1, extra=auth.server_conf) as cluster:
        good = sink_from_config(JetStreamOutputConfig(
            servers=cluster.urls, create_stream=True, creds_file=str(auth.creds)),
            host="h", identity=Identity("0" * 16, "s"))
        try:
            assert good.send(_batch(20)) is Verdict.OK
            assert good.stats.published == 20
        finally:
            good.close()
        stranger = sink_from_config(JetStreamOutputConfig(
            servers=cluster.urls, creds_file=str(auth.stranger_creds), connect_timeout=2),
            host="h", identity=None)
        try:
            assert stranger.send(_batch(3)) is Verdict.RETRY
        finally:
            stranger.close()
        messages = run(stream_messages(cluster.urls, "LOGS", creds=str(auth.creds)))
        # log-shuttle server consumes the stream with the same kind of credentials
        server = Server(tmp_path, "--from-jetstream", cluster.urls[0], name="server",
                        env=agent_env(LOG_SHUTTLE_SERVER__JETSTREAM_CREDS_FILE=str(auth.creds)))
        try:
            def received() -> list[dict]:
                return [json.loads(line) for path in sorted(server.dir.glob("received*.ndjson"))
                        for line in complete_lines(path.read_bytes())]
            wait_for(lambda: len(received()) >= 20, timeout=30, what="the records in the server")
        finally:
            assert server.stop() == 0
    assert len(messages) == 20
    assert sorted(r["line"] for r in received()) == sorted(f"line {i}" for i in range(20))


def test_a_consuming_server_refuses_what_cannot_work(tmp_path):
    """No such stream: exit 3 with the reason; stdout as output: a configuration error (exit 2:
    a message is acknowledged only once its write is durable, which stdout cannot say)."""
    import subprocess

    from tests.harness import ROOT, agent_command

    with NatsCluster(tmp_path / "nats", nodes=1) as cluster:
        base = agent_command("server", "--from-jetstream", cluster.urls[0])
        missing = subprocess.run([*base, "--jetstream-stream", "NOPE", "--output-dir",
                                  str(tmp_path / "out")], capture_output=True, text=True,
                                 env=agent_env(), cwd=ROOT, timeout=60)
        assert missing.returncode == 3, missing.stderr
        assert "the stream 'NOPE' does not exist" in missing.stderr
    stdout = subprocess.run([*base, "--output-stdout"], capture_output=True, text=True,
                            env=agent_env(), cwd=ROOT, timeout=60)
    assert stdout.returncode == 2 and "durable" in stdout.stderr
