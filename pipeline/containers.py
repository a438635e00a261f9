"""Which container a process or a log file belongs to, from a cgroup path or a log path.

cgroup paths, as the runtimes make them (cgroup v2 with the systemd driver, and the cgroupfs
driver of v1/v2); the 64-hex container id is looked for anywhere in the path, so that a path seen
from another cgroup namespace (``/../libpod-<id>.scope``, in a sidecar) still resolves:

    docker      /system.slice/docker-<id>.scope            /docker/<id>
    containerd  /kubepods.slice/.../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
                /kubepods/burstable/pod<uid>/<id>          /system.slice/containerd.service/...:cri-containerd:<id>
    CRI-O       /kubepods.slice/.../crio-<id>.scope        (crio-conmon-<id>.scope: its monitor)
    podman      /machine.slice/libpod-<id>.scope           /user.slice/.../libpod-<id>.scope/container
    systemd     /system.slice/nginx.service                (no container: the unit is kept)

Log paths of container runtimes:

    /var/log/containers/<pod>_<namespace>_<container>-<id>.log      (kubelet's symlinks)
    /var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<n>.log
    /var/lib/docker/containers/<id>/<id>-json.log
"""

from __future__ import annotations

import re

from common.events import ContainerRef

_ID = r"([0-9a-f]{64})"
_RUNTIMES = [
    (re.compile(r"cri-containerd[-:]" + _ID), "containerd"),
    (re.compile(r"crio-(?:conmon-)?" + _ID), "cri-o"),
    (re.compile(r"libpod-(?:conmon-)?" + _ID), "podman"),
    (re.compile(r"docker[-/]" + _ID), "docker"),
    (re.compile(r"/kubepods[^\n]*?/pod[0-9a-f_-]{36}/" + _ID), "containerd"),
    (re.compile(r"/(?:containerd|moby|lxc|garden)/" + _ID), "containerd"),
]
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_UNIT = re.compile(r"/([^/]+\.(?:service|scope))(?:/|$)")

_K8S_LINK = re.compile(r"/var/log/containers/([^_/]+)_([^_/]+)_(.+)-([0-9a-f]{64})\.log$")
_K8S_POD = re.compile(r"/var/log/pods/([^_/]+)_([^_/]+)_([0-9a-f-]{36})/([^/]+)/[^/]+\.log")
_DOCKER = re.compile(r"/containers/([0-9a-f]{64})/[0-9a-f]{64}-json\.log")


# What is known of a container; fields not known stay empty (the events' own struct).
Container = ContainerRef


def from_cgroup(path: str) -> tuple[Container | None, str]:
    """(the container, the systemd unit) of a cgroup path; either may be missing."""
    container = None
    for pattern, runtime in _RUNTIMES:
        m = pattern.search(path)
        if m:
            pod = _POD.search(path)
            container = Container(id=m.group(1), runtime=runtime,
                                  pod_uid=pod.group(1).replace("_", "-") if pod else "")
            break
    if container is None:
        pod = _POD.search(path)
        if pod:  # a pod's own cgroup (pause or a process of no container)
            container = Container(pod_uid=pod.group(1).replace("_", "-"))
    units = _UNIT.findall(path)
    unit = units[-1] if units and container is None else ""
    return container, unit


def from_log_path(path: str) -> Container | None:
    """The container whose log a file is, from where runtimes put their logs."""
    m = _K8S_LINK.search(path)
    if m:
        return Container(id=m.group(4), pod=m.group(1), namespace=m.group(2), name=m.group(3))
    m = _K8S_POD.search(path)
    if m:
        return Container(namespace=m.group(1), pod=m.group(2), pod_uid=m.group(3),
                         name=m.group(4))
    m = _DOCKER.search(path)
    if m:
        return Container(id=m.group(1), runtime="docker")
    return None
