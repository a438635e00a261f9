"""The checks that config structs run (common/config.py): addresses, files, directories, TLS
material, tokens. Each returns problems naming the key; nothing raises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from common.config import (TlsClientOptions, address_problems, directory_problems,
                           file_problems, tls_problems, token_problems)
from tests.harness import ROOT
from tests.server.helpers import make_pki


@pytest.mark.parametrize("text, problem", [
    ("127.0.0.1:514", None),
    ("[::1]:4317", None),
    ("localhost:65535", None),
    ("", "a: empty: give HOST:PORT"),
    ("127.0.0.1", "a: address '127.0.0.1' is not HOST:PORT (no port)"),
    ("127.0.0.1:", "a: address '127.0.0.1:' has no port (HOST:PORT)"),
    ("127.0.0.1:0", "a: address '127.0.0.1:0': the port must be a number in 1-65535"),
    ("127.0.0.1:70000", "a: address '127.0.0.1:70000': the port must be a number in 1-65535"),
    ("127.0.0.1:http", "a: address '127.0.0.1:http': the port must be a number in 1-65535"),
    (":514", "a: address ':514' has no host (HOST:PORT)"),
    ("a b:1", "a: address 'a b:1': 'a b' is not a host name or address"),
])
def test_addresses(text, problem):
    assert address_problems(text, key="a") == ([problem] if problem else [])


def test_a_listen_address_may_take_port_0_and_no_host():
    assert address_problems(":0", key="a", listen=True, default_host=True) == []


def test_files_and_directories(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert file_problems("", key="k") == [] and file_problems(str(f), key="k") == []
    assert file_problems(str(tmp_path / "no"), key="k") == [f"k: no such file: {tmp_path}/no"]
    assert file_problems(str(tmp_path), key="k") == [f"k: {tmp_path} is a directory, not a file"]
    assert directory_problems(str(tmp_path / "new" / "deeper"), key="d") == []
    assert directory_problems(str(f), key="d") == [f"d: {f} is a file, not a directory"]
    assert directory_problems(str(f / "sub"), key="d") == [
        f"d: {f}/sub cannot be made: {f} is a file, not a directory"]


def test_unreadable_and_unwritable_as_an_unprivileged_user():
    # root reads and writes anything: the permission checks run as nobody (setpriv), in a
    # directory nobody can reach (pytest's own tmp directories are root's alone).
    top = Path(tempfile.mkdtemp(prefix="log-shuttle-perm-", dir="/tmp"))
    try:
        top.chmod(0o755)
        secret = top / "secret"
        secret.write_text("token")
        secret.chmod(0o600)
        locked = top / "locked"
        locked.mkdir(mode=0o755)
        hidden = top / "hidden"
        hidden.mkdir(mode=0o700)
        checks = [("f", secret), ("d", locked), ("d", locked / "sub"), ("f", hidden / "x"),
                  ("d", hidden / "state")]
        code = ("from common.config import file_problems as f, directory_problems as d\n"
                + "".join(f"print({fn}({str(p)!r}, key='k'))\n" for fn, p in checks))
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd="/", timeout=60)
    finally:
        shutil.rmtree(top)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str([p]) for p in [
        f"k: {secret} cannot be read (permission denied)",
        f"k: {locked} cannot be written (permission denied)",
        f"k: {locked}/sub cannot be made: {locked} cannot be written (permission denied)",
        f"k: {hidden}/x cannot be reached (Permission denied)",
        f"k: {hidden}/state cannot be reached (Permission denied)",
    ]]


def test_tls_material_is_read_as_the_output_would(tmp_path):
    pki = make_pki(tmp_path)
    assert tls_problems(ca=str(pki.ca), cert=str(pki.client_cert),
                        key=str(pki.client_key)) == []
    text = tmp_path / "not-pem"
    text.write_text("hello\n")
    (ca,) = tls_problems(ca=str(text))
    assert ca.startswith(f"tls_ca: {text} holds no usable PEM certificate")
    (pair,) = tls_problems(cert=str(pki.client_cert), key=str(pki.server_key))
    assert pair.startswith(f"tls_cert: TLS certificate {pki.client_cert} and key "
                           f"{pki.server_key} cannot be used together")


def test_tokens(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    spaced = tmp_path / "spaced"
    spaced.write_text("a b\n")
    good = tmp_path / "good"
    good.write_text(" abc \n")
    assert token_problems(str(good)) == [] and token_problems("", environ={}) == []
    assert token_problems(str(empty)) == [f"auth_token_file: the token file {empty} is empty"]
    assert token_problems(str(spaced)) == [
        "auth_token_file: the token holds spaces or control characters"]
    assert token_problems("", environ={"LOG_SHUTTLE_AUTH_TOKEN": "a\tb"}) == [
        "auth_token_file: LOG_SHUTTLE_AUTH_TOKEN: the token holds spaces or control characters"]


def test_tls_options_report_every_problem_with_its_key(tmp_path):
    opts = TlsClientOptions(tls_ca=str(tmp_path / "ca.pem"), tls_cert=str(tmp_path / "c.pem"),
                            auth_token_file=str(tmp_path))
    assert opts.problems(environ={}) == [
        "tls_key: give both a TLS certificate and its key (tls_cert and tls_key)",
        f"tls_ca: no such file: {tmp_path}/ca.pem",
        f"tls_cert: no such file: {tmp_path}/c.pem",
        f"auth_token_file: {tmp_path} is a directory, not a file",
    ]
