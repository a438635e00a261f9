"""The agent's start, after the command line: the supervisor in a lean process.

``log-shuttle`` parses its flags and loads and checks the configuration with the CLI's libraries
(typer, importlib.metadata: about 10 MiB). The supervisor does not need them, and every child
forked from it would carry a copy of them in its RSS. So on Linux the CLI process replaces
itself (``execv``, same pid: systemd, container runtimes and ``kill`` see no change) with a
fresh interpreter that runs :func:`main`: it reads the checked configuration from a memfd and
runs :func:`start`, importing only what the supervisor and the plan need (docs/benchmarks.md,
"Memory"). The stop signals are held across the exec (a signal mask survives it), so a stop
asked for meanwhile is handled as a stop. Where that cannot be done (no memfd, another OS, an
exec that fails), :func:`start` runs in the CLI's process, as before.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import TYPE_CHECKING, NoReturn

from common.exitcodes import ExitCode

if TYPE_CHECKING:
    from agent.config import Config

ENTRY = "agent.start"
"""The module the new interpreter runs (``python -P -m agent.start FD``)."""


def launch(cfg: Config, version: str) -> int:
    """Start the agent: in a lean process when this OS allows (never returns then), else here."""
    if sys.platform.startswith("linux") and hasattr(os, "memfd_create"):
        try:
            _reexec(cfg, version)
        except OSError as exc:
            print(f"log-shuttle: starting in this process ({exc})", file=sys.stderr)
    return start(cfg, version)


def _reexec(cfg: Config, version: str) -> None:
    """Replace this process with ``python -P -m agent.start FD``; returns only on failure."""
    from agent.platforms import current
    from agent.supervisor import Supervisor

    current().hold_signals(Supervisor.SIGNALS)  # held until the supervisor's handlers are in
    # place, in the new interpreter
    fd = os.memfd_create("log-shuttle.start", 0)  # inherited by the exec: no MFD_CLOEXEC
    try:
        os.write(fd, pickle.dumps((cfg, version), protocol=pickle.HIGHEST_PROTOCOL))
        os.lseek(fd, 0, os.SEEK_SET)
        sys.stdout.flush()
        sys.stderr.flush()
        # -P: the current directory is not put on sys.path (a directory there named like one
        # of our packages must not be imported instead); the environment (PYTHONPATH) is
        # the CLI's, so the same code is found.
        os.execv(sys.executable, [sys.executable, "-P", "-m", ENTRY, str(fd)])
    finally:
        os.close(fd)


def main() -> NoReturn:
    """The exec'd interpreter's entry: the configuration from the memfd, then :func:`start`."""
    fd = int(sys.argv[1])
    with os.fdopen(fd, "rb") as f:
        cfg, version = pickle.load(f)
    sys.exit(start(cfg, version))


def start(cfg: Config, version: str) -> int:
    """Run the supervisor with this configuration; return the exit code."""
    from setproctitle import setproctitle

    from agent import privileges
    from agent.observe.setup import observe, with_listener
    from agent.plan import plan
    from agent.platforms import current
    from agent.supervisor import Supervisor
    from common.logs import setup_logging

    current().hold_signals(Supervisor.SIGNALS)  # a stop during start-up is a stop, not a kill
    setproctitle("log-shuttle: supervisor")
    log = setup_logging("supervisor", cfg.agent.log_level)
    from common.identity import IdentityError, IdentityNotKept, ephemeral_identity, load_identity
    from inputs.file.checkpoint import default_state_dir

    try:  # the agent id for record ids, kept in the state directory (made on first start)
        identity = load_identity(cfg.agent.state_dir or default_state_dir())
    except IdentityNotKept as exc:  # e.g. a read-only container: unique ids, not stable ones
        identity = ephemeral_identity()
        log.warning("%s; record ids use an agent id of this run only (%s): after a restart, "
                    "receivers cannot tell replayed records from new ones", exc, identity.agent)
    except IdentityError as exc:
        log.error("cannot start: %s", exc)
        return ExitCode.BOOT
    root = os.geteuid() == 0 and sys.platform.startswith("linux")
    try:
        user = privileges.agent_user(cfg.agent.user) if root else None
    except privileges.PrivilegeError as exc:
        log.error("%s", exc)
        return ExitCode.CONFIG
    if user is not None and not privileges.can_switch_users():
        log.info("the outputs and the listener stay uid 0 (with no capabilities): switching "
                 "them to %s takes %s, which this process does not have", user[0],
                 ", ".join(sorted(privileges.SWITCHING - privileges.effective())))
        user = None
    rundir = observe(cfg, log=log, owner=user[1] if user else None)
    try:
        specs, queues = plan(cfg)
        if rundir is not None:
            specs = with_listener(cfg, specs, rundir.path, version=version)
        for spec in specs:
            spec.identity = identity
        if root:  # root only where it is needed (agent/privileges.py)
            try:
                keep = privileges.assign(specs, user=user, log=log)
                privileges.apply(privileges.Privileges(keep=keep))
            except privileges.PrivilegeError as exc:
                log.error("%s", exc)
                for q in queues:
                    q.destroy()
                return ExitCode.BOOT
            log.debug("supervisor keeps %s", ", ".join(sorted(keep)))
        log.info("log-shuttle %s: %s", version, ", ".join(s.role for s in specs))
        import gc

        from common.memory import trim

        gc.collect()
        trim()  # what start-up freed goes back before the children are forked from this
        sup = Supervisor(
            specs, queues, host=cfg.host_name(), log_level=cfg.agent.log_level,
            drain_timeout=cfg.agent.drain_timeout, backoff=cfg.agent.restart_backoff,
            backoff_max=cfg.agent.restart_backoff_max, log=log, rundir=rundir)
        return sup.run()
    finally:
        if rundir is not None:
            rundir.remove()


if __name__ == "__main__":
    main()
