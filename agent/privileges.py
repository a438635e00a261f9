"""Root only where it is needed: what each component process keeps when the agent runs as root.

Under ``sudo log-shuttle ...`` the supervisor works out, per child, a :class:`Privileges`:

- components that declare capabilities (agent/components.py: the eBPF input, the file input,
  the pipeline) keep uid 0 but only those capabilities (effective and permitted), with
  everything else dropped from the bounding set, no ambient or inheritable ones, and
  ``no_new_privs``: even an exec cannot get more back;
- every other component (the outputs) and the HTTP listener become the agent's user
  (``agent.user``; default ``log-shuttle`` if it exists, else ``nobody``), with no supplementary
  groups, no capabilities at all and ``no_new_privs``.

The supervisor itself keeps the union of what its children keep plus what starting and
restarting them takes (CAP_SETUID/CAP_SETGID to switch an output's user, CAP_SETPCAP to shrink a
child's bounding set, CAP_KILL to signal children of another user). A child applies its
:class:`Privileges` first thing after the fork (agent/platforms/posix.py), before it builds its
component: nothing of the component ever runs with more.

Capabilities are set with capget/capset and prctl through ctypes (libc): no extra package.
What each component needs, and how it was found (by trying less), is in docs/operating.md.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass, field

from common.errors import LogShuttleError

CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
NAMES = {v: k for k, v in CAPS.items()}

SUPERVISOR_OWN = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")
"""What the supervisor needs for itself: switch an output's user, shrink a child's bounding set,
signal children that run as another user."""

DEFAULT_USERS = ("log-shuttle", "nobody")

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


class PrivilegeError(LogShuttleError):
    """Privileges could not be set up as asked (a child cannot run safely: it does not start)."""


@dataclass(frozen=True)
class Privileges:
    keep: frozenset[str] = field(default_factory=frozenset)
    """Capabilities kept (effective and permitted); every other one goes, bounding set too."""
    user: tuple[str, int, int] | None = None
    """(name, uid, gid) to become; None: stay uid 0 with ``keep``."""

    def describe(self) -> str:
        who = f"user {self.user[0]} ({self.user[1]})" if self.user else "uid 0"
        return f"{who}, capabilities: {', '.join(sorted(self.keep)) or 'none'}"


def agent_user(name: str = "") -> tuple[str, int, int]:
    """The unprivileged user: ``name``, else log-shuttle if it exists, else nobody (else
    65534)."""
    import pwd  # POSIX only

    for candidate in ([name] if name else list(DEFAULT_USERS)):
        try:
            pw = pwd.getpwnam(candidate)
            return pw.pw_name, pw.pw_uid, pw.pw_gid
        except KeyError:
            if name:
                raise PrivilegeError(f"agent.user: no user {name!r} on this system") from None
    return "65534", 65534, 65534


SWITCHING = frozenset({"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN"})
"""What making children of another user takes (switch, signal them, give them their
directories). A bounding set without them (a systemd unit's CapabilityBoundingSet, a
container's cap-drop) leaves the outputs and the listener uid 0, still with no capabilities."""


def effective() -> frozenset[str]:
    """This process's effective capabilities."""
    try:
        return frozenset(names(status_of()["CapEff"]))
    except (OSError, KeyError):
        return frozenset()


def can_switch_users() -> bool:
    return SWITCHING <= effective()


def supervisor_keeps(children: list[Privileges]) -> frozenset[str]:
    out = set(SUPERVISOR_OWN)
    for p in children:
        out |= p.keep
    return frozenset(out)


# --- applying them --------------------------------------------------------------------------

BUILDING_AS_USER = ("CAP_DAC_READ_SEARCH", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
"""What a child that becomes the user keeps while its component builds (reading its TLS key or
token file, which may be root's; binding its port), until :func:`become_user`."""


def apply(p: Privileges) -> None:
    """In this process, single-threaded (capabilities are per thread), before the component
    builds: a uid-0 child keeps ``p.keep`` only; a child that becomes the user keeps
    BUILDING_AS_USER until :func:`become_user`. The bounding set is cut to the same, ambient
    and inheritable sets emptied, no_new_privs set (threads made later inherit all of it).
    Raises PrivilegeError when the kernel refuses."""
    if not sys.platform.startswith("linux"):
        return
    libc = _libc()
    keep = {CAPS[c] for c in (p.keep if p.user is None else BUILDING_AS_USER)}
    have = {CAPS[c] for c in effective() if c in CAPS}
    keep &= have  # what a restricted bounding set took already cannot be kept
    try:
        if CAPS["CAP_SETPCAP"] in have:  # else the bounding set is as we found it
            for cap in range(last_cap() + 1):
                if cap not in keep:
                    _prctl(libc, PR_CAPBSET_DROP, cap)
        _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _capset(libc, keep)
        _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise PrivilegeError(f"cannot drop privileges to {p.describe()}: "
                             f"{exc.strerror or exc}") from exc


def become_user(p: Privileges) -> None:
    """Once the component is built: become the user, with no capability left. glibc's
    setresuid changes every thread of the process (threads the build started, e.g. gRPC's, too)
    and the kernel clears each one's capabilities as its uid leaves 0."""
    if p.user is None or not sys.platform.startswith("linux"):
        return
    libc = _libc()
    _, uid, gid = p.user
    try:
        for cap in BUILDING_AS_USER:  # out of the bounding set too (needs CAP_SETPCAP: last)
            _prctl(libc, PR_CAPBSET_DROP, CAPS[cap])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _capset(libc, set())
    except OSError as exc:
        raise PrivilegeError(f"cannot become {p.describe()}: {exc.strerror or exc}") from exc


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPS.values())


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int) -> None:
    if libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _capset(libc: ctypes.CDLL, caps: set[int]) -> None:
    mask = sum(1 << c for c in caps)
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def status_of(pid: int | str = "self") -> dict[str, str]:
    """Uid, Gid, CapEff, CapPrm, CapBnd, CapAmb, NoNewPrivs of a process (/proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd",
                       "CapAmb", "NoNewPrivs"):
                out[key] = value.strip()
    return out


def names(mask_hex: str) -> set[str]:
    mask = int(mask_hex, 16)
    return {NAMES.get(i, f"cap{i}") for i in range(64) if mask >> i & 1}


# --- the supervisor's part -----------------------------------------------------------------

def assign(specs: list, *, user: tuple[str, int, int] | None, log) -> frozenset[str]:
    """Work out every child's privileges (``spec.privileges``) and prepare what the
    unprivileged ones write to (an output's dead letters: ``<state_dir>/outputs``, owned by
    the user); return what the supervisor itself must keep. ``user`` None: the children that
    declare nothing stay uid 0, with no capabilities."""
    import msgspec

    for s in specs:
        s.privileges = Privileges(keep=frozenset(s.capabilities)) if s.capabilities \
            else Privileges(user=user)
        state_dir = getattr(s.config, "state_dir", None) if s.privileges.user else None
        if state_dir:
            s.config = msgspec.structs.replace(s.config,
                                               state_dir=_user_dir(state_dir, user, log))
        log.debug("%s runs as %s", s.role, s.privileges.describe())
    keep = supervisor_keeps([s.privileges for s in specs])
    return keep if user is not None else keep - SWITCHING


def _user_dir(state_dir: str, user: tuple[str, int, int], log) -> str:
    """``<state_dir>/outputs``, owned by the user; the state dir gets o+x (traverse, not list)
    so that the user can reach it."""
    path = os.path.join(state_dir, "outputs")
    try:
        os.makedirs(state_dir, mode=0o711, exist_ok=True)
        mode = os.stat(state_dir).st_mode
        if not mode & 0o001:
            os.chmod(state_dir, (mode & 0o7777) | 0o001)
            log.debug("%s: o+x, for the outputs' directory in it", state_dir)
        from outputs.deadletter import directory_of

        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chown(path, user[1], user[2])
        # Made now (root): the output opens it while it builds (uid 0, no DAC override), when
        # it could not create it in the user's directory.
        letters = directory_of(path)
        os.makedirs(letters, mode=0o750, exist_ok=True)
        os.chown(letters, user[1], user[2])
    except OSError as exc:
        raise PrivilegeError(f"cannot prepare {path} for user {user[0]}: "
                             f"{exc.strerror or exc}") from exc
    return path
