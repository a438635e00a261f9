"""Import every module of the project as Windows would, and report each one that fails.

    python tests/agent/win32_imports.py ROOT PACKAGE...

Windows cannot run here, so this makes Linux look like it to the project's code: first the
third-party and standard modules the project imports are imported as they are (they have their
own Windows code, which is not what is tested); then the POSIX-only modules are hidden
(``sys.modules[name] = None``: ``import pwd`` raises ImportError, as it does on Windows), the
POSIX-only functions and constants are taken off ``os``, ``signal``, ``select``, ``mmap``,
``socket`` and ``time``, and ``sys.platform`` becomes ``"win32"`` (``os.name`` stays, or pathlib
would make WindowsPaths, which cannot work on Linux); and then every module of the given packages is imported. Prints one line per failure (module, the
error, the line of project code that raised) and exits 1 if any failed, else prints the number
of modules imported and exits 0. What it cannot show: that the Windows code paths work (only a
Windows machine can), nor Windows' own modules (msvcrt, _winapi), which are absent here.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path

HIDDEN_MODULES = ("pwd", "grp", "fcntl", "termios", "tty", "pty", "resource", "posix", "syslog",
                  "crypt", "spwd", "nis", "readline", "curses", "_posixshmem", "bcc")
"""Not on Windows (bcc: BCC is Linux only)."""

POSIX_ONLY = {
    "os": ("sysconf", "sysconf_names", "confstr", "fork", "forkpty", "pipe2", "memfd_create",
           "eventfd", "EFD_NONBLOCK", "EFD_CLOEXEC", "MFD_CLOEXEC", "getuid", "geteuid",
           "getgid", "getegid", "getgroups", "setsid", "getsid", "setpgid", "getpgid", "killpg",
           "wait3", "wait4", "WNOHANG", "O_NONBLOCK", "O_CLOEXEC", "pread", "pwrite",
           "sched_getaffinity", "getloadavg", "uname", "statvfs", "sync", "mkfifo", "major",
           "minor", "makedev", "openpty", "nice", "sendfile", "posix_fadvise", "set_blocking",
           "get_blocking"),
    "signal": ("SIGHUP", "SIGCHLD", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM",
               "SIGQUIT", "SIGSTOP", "SIGCONT", "SIGTSTP", "SIGWINCH", "pthread_sigmask",
               "pthread_kill", "sigwait", "sigpending", "setitimer", "getitimer",
               "siginterrupt", "alarm", "pause", "SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK"),
    "select": ("poll", "epoll", "devpoll", "kqueue", "POLLIN", "POLLOUT", "POLLERR", "POLLHUP",
               "POLLNVAL", "EPOLLIN", "EPOLLOUT", "EPOLLET"),
    "mmap": ("MAP_SHARED", "MAP_PRIVATE", "MAP_ANONYMOUS", "PROT_READ", "PROT_WRITE",
             "MADV_DONTNEED"),
    "socket": ("AF_UNIX", "SO_REUSEPORT", "MSG_DONTWAIT", "sethostname", "if_nameindex"),
    "time": ("clock_gettime", "clock_gettime_ns", "clock_settime", "CLOCK_MONOTONIC",
             "CLOCK_REALTIME", "CLOCK_BOOTTIME", "pthread_getcpuclockid", "tzset"),
}


def modules_of(root: Path, packages: list[str]) -> list[str]:
    names = []
    for pkg in packages:
        names.append(pkg)
        names += [m.name for m in pkgutil.walk_packages([str(root / pkg)], pkg + ".",
                                                        onerror=lambda _n: None)]
    return sorted(names)


def outside_imports(root: Path, packages: list[str]) -> set[str]:
    """Modules other than the project's that its modules import at module level (including in
    top-level ``if``/``try`` blocks), as dotted names; ``from x import y`` gives x and x.y."""
    found: set[str] = set()
    for pkg in packages:
        for path in (root / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            stack: list[ast.AST] = list(tree.body)
            while stack:
                node = stack.pop()
                if isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module)
                    found |= {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, (ast.If, ast.Try)):
                    for part in ("body", "orelse", "finalbody", "handlers"):
                        stack += getattr(node, part, [])
                elif isinstance(node, ast.ExceptHandler):
                    stack += node.body
    return {n for n in found if n.split(".")[0] not in packages
            and n.split(".")[0] not in HIDDEN_MODULES and n != "__future__"}


def look_like_windows() -> None:
    for name in HIDDEN_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    for module, names in POSIX_ONLY.items():
        mod = importlib.import_module(module)
        for name in names:
            if hasattr(mod, name):
                delattr(mod, name)
    sys.platform = "win32"


def where(exc: BaseException, root: Path) -> str:
    """The last line of project code in the traceback."""
    top = str(root) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(top)]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename[len(top):]}:{f.lineno}: {f.line}"


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve()  # before sys.platform changes
    packages = argv[1:]
    sys.path.insert(0, str(root))
    for name in sorted(outside_imports(root, packages)):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a name that is not a module, or Windows-only
            pass
    look_like_windows()
    names = modules_of(root, packages)
    failed = 0
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - report every module, not the first
            failed += 1
            print(f"{name}: {type(exc).__name__}: {exc} (at {where(exc, root)})")
    if not failed:
        print(f"imported {len(names)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
