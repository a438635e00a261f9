"""Decentralized NATS auth for tests, made here: an operator, an account with JetStream and a
user, as nkeys and signed JWTs (what NATS's `nsc` makes), the server's operator-mode settings
and the user's .creds file. The JWT layout is NATS's (github.com/nats-io/jwt v2): a JSON header
``{"typ":"JWT","alg":"ed25519-nkey"}``, the claims (jti, iat, iss, sub, name, nats{type,
version}), each base64url without padding, and an ed25519 signature of ``header.claims`` by
the issuer's key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict) -> str:
    claims = {"iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name,
              "sub": subject, "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(
        hashlib.sha512(json.dumps(claims, sort_keys=True).encode()).digest()[:32]).decode() \
        .rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1,
             "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass
class Decentralized:
    server_conf: str
    """Lines for the server's configuration: operator mode, the accounts preloaded."""
    creds: Path
    """A user's credentials file (its JWT and its nkey seed)."""
    stranger_creds: Path
    """A user signed by another account's key, which the server does not know."""


def decentralized(tmp: Path) -> Decentralized:
    operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system, account = keypair(nkeys.PREFIX_BYTE_ACCOUNT), keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = jwt(operator, operator.public_key.decode(), "test-operator",
                 {"type": "operator",
                  "system_account": system.public_key.decode()})
    sys_jwt = jwt(operator, system.public_key.decode(), "SYS",
                  {"type": "account", "limits": {k: v for k, v in UNLIMITED.items()
                                                 if k not in ("mem_storage", "disk_storage",
                                                              "streams", "consumer")}})
    acc_jwt = jwt(operator, account.public_key.decode(), "LOGS",
                  {"type": "account", "limits": UNLIMITED})
    (tmp / "operator.jwt").write_text(op_jwt)
    conf = (f'operator: "{tmp / "operator.jwt"}"\n'
            f'system_account: {system.public_key.decode()}\n'
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {system.public_key.decode()}: {sys_jwt}\n"
            f"  {account.public_key.decode()}: {acc_jwt}\n"
            "}\n")
    stranger = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    return Decentralized(server_conf=conf, creds=_creds(tmp / "shipper.creds", account),
                         stranger_creds=_creds(tmp / "stranger.creds", stranger))


def _creds(path: Path, account: nkeys.KeyPair) -> Path:
    user = keypair(nkeys.PREFIX_BYTE_USER)
    token = jwt(account, user.public_key.decode(), "shipper",
                {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
    path.write_text("-----BEGIN NATS USER JWT-----\n" f"{token}\n"
                    "------END NATS USER JWT------\n\n"
                    "************************* IMPORTANT *************************\n"
                    "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                    "-----BEGIN USER NKEY SEED-----\n" f"{user.seed.decode()}\n"
                    "------END USER NKEY SEED------\n")
    path.chmod(0o600)
    return path
