"""Container ids from real-world cgroup paths and container log paths."""

from __future__ import annotations

import pytest

from pipeline.containers import from_cgroup, from_log_path

ID = "3f5ad8a1b7c24e0c9f1d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f"
POD = "7e1c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
POD_ = POD.replace("-", "_")

CGROUPS = [
    # docker, cgroup v2 with the systemd driver, and v1 cgroupfs
    (f"/system.slice/docker-{ID}.scope", ID, "docker", ""),
    (f"/docker/{ID}", ID, "docker", ""),
    # containerd under kubelet, systemd driver and cgroupfs driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/"
     f"cri-containerd-{ID}.scope", ID, "containerd", POD),
    (f"/kubepods/burstable/pod{POD}/{ID}", ID, "containerd", POD),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/"
     f"cri-containerd-{ID}.scope/init.scope", ID, "containerd", POD),
    # containerd without kubernetes (nerdctl, systemd driver)
    (f"/system.slice/containerd.service/kubepods-pod{POD_}.slice:cri-containerd:{ID}",
     ID, "containerd", POD),
    # CRI-O, and its conmon monitor
    (f"/kubepods.slice/kubepods-pod{POD_}.slice/crio-{ID}.scope", ID, "cri-o", POD),
    (f"/kubepods.slice/kubepods-pod{POD_}.slice/crio-conmon-{ID}.scope", ID, "cri-o", POD),
    # podman, as root and rootless, and seen from another container's cgroup namespace
    (f"/machine.slice/libpod-{ID}.scope/container", ID, "podman", ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
     ID, "podman", ""),
    (f"/../libpod-{ID}.scope/container", ID, "podman", ""),
    (f"/machine.slice/libpod-conmon-{ID}.scope", ID, "podman", ""),
]


@pytest.mark.parametrize("path,cid,runtime,pod", CGROUPS)
def test_container_from_cgroup(path, cid, runtime, pod):
    container, unit = from_cgroup(path)
    assert (container.id, container.runtime, container.pod_uid) == (cid, runtime, pod)
    assert unit == ""


@pytest.mark.parametrize("path,unit", [
    ("/system.slice/nginx.service", "nginx.service"),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
    ("/system.slice/cron.service/sub", "cron.service"),
    ("/", ""),
    ("", ""),
])
def test_no_container_keeps_the_systemd_unit(path, unit):
    assert from_cgroup(path) == (None, unit)


def test_a_pods_own_cgroup_gives_the_pod():
    container, _ = from_cgroup(f"/kubepods.slice/kubepods-pod{POD_}.slice")
    assert (container.id, container.pod_uid) == ("", POD)


def test_container_log_paths():
    c = from_log_path(f"/var/log/containers/web-5d8f_shop_nginx-{ID}.log")
    assert (c.id, c.pod, c.namespace, c.name) == (ID, "web-5d8f", "shop", "nginx")
    c = from_log_path(f"/var/log/pods/shop_web-5d8f_{POD}/nginx/0.log")
    assert (c.namespace, c.pod, c.pod_uid, c.name) == ("shop", "web-5d8f", POD, "nginx")
    c = from_log_path(f"/var/lib/docker/containers/{ID}/{ID}-json.log")
    assert (c.id, c.runtime) == (ID, "docker")
    assert from_log_path("/var/log/syslog") is None
