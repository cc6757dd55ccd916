"""Certificates and keys for a deployed federation, made with ``cryptography``.

``fedpriv certs init DIR --host ...`` writes a private CA (``ca.pem``/``ca.key``) and a
SuperLink TLS certificate (``superlink.pem``/``superlink.key``) whose subject alternative
names are the given hosts (IP addresses and DNS names). ``fedpriv certs node NAME`` writes
a SuperNode's authentication key pair (``nodes/NAME``, ``nodes/NAME.pub``) in the OpenSSH
format Flower's node authentication reads (EC on NIST P-384) and, beside it, the node's
secure-aggregation identity (``nodes/NAME.ed25519``, Ed25519, PKCS#8 PEM) whose public key
is added to ``roster.json`` under the node's secagg id: the roster clients hold out of
band (Bonawitz et al. 2017, Section 4, malicious setting). Private keys are written
0600; nothing is overwritten without ``force``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedpriv.secagg.errors import SecAggError
from fedpriv.secagg.identity import IdentityKey, Roster

__all__ = [
    "ROSTER",
    "CertError",
    "CertPaths",
    "ensure_identities",
    "init_certs",
    "load_identity",
    "load_roster",
    "node_identity",
    "node_key",
    "node_paths",
    "node_secagg_config",
]

ROSTER = "roster.json"

_VALID_DAYS = 365


class CertError(ValueError):
    """Bad input or an existing file that would be overwritten."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CertPaths:
    """Where ``init_certs`` wrote its files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    if path.exists() and not force:
        raise CertError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if not h or any(c.isspace() for c in h):
                raise CertError(f"--host must be an IP address or DNS name, got {h!r}") from None
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def init_certs(directory: str | Path, hosts: list[str], *, force: bool = False,
               days: int = _VALID_DAYS) -> CertPaths:
    """Write a CA and a SuperLink certificate valid for ``hosts``."""
    if not hosts:
        raise CertError("--host is required at least once (the SuperLink's IP or DNS name)")
    root = Path(directory)
    paths = CertPaths(ca_cert=root / "ca.pem", ca_key=root / "ca.key",
                      server_cert=root / "superlink.pem", server_key=root / "superlink.key")
    for p in (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key):
        if p.exists() and not force:
            raise CertError(f"{p} exists; pass --force to overwrite it")
    san = _san(hosts)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedpriv federation CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths.ca_key, _pem_key(ca_key), private=True, force=force)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False,
           force=force)
    _write(paths.server_key, _pem_key(server_key), private=True, force=force)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM),
           private=False, force=force)
    return paths


def node_paths(directory: str | Path, name: str) -> tuple[Path, Path]:
    """(private key, public key) paths of SuperNode ``name``."""
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise CertError(f"node name must be letters, digits, '-', '_' or '.', got {name!r}")
    root = Path(directory) / "nodes"
    return root / name, root / f"{name}.pub"


def node_key(directory: str | Path, name: str, *, force: bool = False,
             identity: bool = True) -> tuple[Path, Path]:
    """Write SuperNode ``name``'s authentication key pair (OpenSSH, EC P-384).

    With ``identity`` (the default) also its secure-aggregation identity beside it
    (:func:`node_identity`, the next free secagg id).
    """
    private, public = node_paths(directory, name)
    key = ec.generate_private_key(ec.SECP384R1())
    _write(private, key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()), private=True, force=force)
    _write(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH) + b"\n",
           private=False, force=force)
    if identity:
        node_identity(directory, name, force=force)
    return private, public


def load_identity(path: str | Path) -> IdentityKey:
    """A secure-aggregation identity key from a PEM file; :class:`CertError` if bad."""
    try:
        return IdentityKey.from_pem(Path(path).read_bytes())
    except (OSError, SecAggError) as err:
        raise CertError(f"cannot read the identity key {path}: {err}") from None


def load_roster(path: str | Path) -> Roster:
    """The roster of identity public keys from ``roster.json``; :class:`CertError` if bad."""
    try:
        return Roster.from_json(Path(path).read_text())
    except (OSError, SecAggError) as err:
        raise CertError(f"cannot read the roster {path}: {err}") from None


def _read_names(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).get(
            "names", {}).items()}
    except (OSError, ValueError, AttributeError) as err:
        raise CertError(f"cannot read the roster {path}: {err}") from None


def _add_to_roster(path: Path, name: str, node: int, public: bytes, *,
                   force: bool) -> Roster:
    keys = dict(load_roster(path).keys) if path.exists() else {}
    names = _read_names(path)
    if node in keys and keys[node] != public and not force:
        raise CertError(f"{path} already has a key for secagg id {node}; pass --force to "
                        "replace it")
    keys[node] = public
    names[name] = node
    roster = Roster(keys=keys)
    data = json.loads(roster.to_json())
    data["names"] = dict(sorted(names.items()))
    _write(path, json.dumps(data, indent=1).encode(), private=False, force=True)
    return roster


def node_identity(directory: str | Path, name: str, secagg_id: int | None = None, *,
                  force: bool = False) -> tuple[Path, Path]:
    """Write node ``name``'s Ed25519 identity beside its node key; add it to the roster.

    ``secagg_id`` defaults to the id ``name`` already has in the roster, else the next
    free one. Returns (identity private key path, roster path); :func:`node_secagg_config`
    gives the node-config entries that point the node at them.
    """
    root = Path(directory)
    roster = root / ROSTER
    names = _read_names(roster)
    if secagg_id is None:
        taken = set(load_roster(roster).keys) if roster.exists() else set()
        secagg_id = names.get(name, max(taken, default=-1) + 1)
    if secagg_id < 0:
        raise CertError(f"secagg id must be >= 0, got {secagg_id}")
    private, _ = node_paths(directory, name)
    ident = private.with_name(f"{name}.ed25519")
    key = IdentityKey()
    _write(ident, key.to_pem(), private=True, force=force)
    _add_to_roster(roster, name, secagg_id, key.public, force=force)
    return ident, roster


def node_secagg_config(directory: str | Path, name: str) -> dict[str, str | int]:
    """Node-config entries for node ``name``: its identity, the roster and its secagg id.

    ``fedpriv deploy supernode`` should add these to the node config it passes to
    ``flower-supernode`` (``secagg-identity``, ``secagg-roster``, ``secagg-id``).
    """
    root = Path(directory)
    roster = root / ROSTER
    names = _read_names(roster)
    if name not in names:
        raise CertError(f"{roster} has no secagg identity for node {name!r}; run "
                        f"`fedpriv certs node {name}`")
    ident = node_paths(directory, name)[0].with_name(f"{name}.ed25519")
    return {"secagg-identity": str(ident.resolve()), "secagg-roster": str(roster.resolve()),
            "secagg-id": names[name]}


def ensure_identities(directory: str | Path, ids: list[int]) -> Roster:
    """Simulation: one identity per client id in ``directory`` (``<id>.ed25519``).

    Existing keys are kept, missing ones made; ``roster.json`` lists them all. In a
    simulation every client runs on this machine; deployed clients hold their own key
    (:func:`node_identity`).
    """
    root = Path(directory)
    roster = root / ROSTER
    keys = dict(load_roster(roster).keys) if roster.exists() else {}
    for u in ids:
        path = root / f"{u}.ed25519"
        if path.exists() and u in keys:
            continue
        key = IdentityKey()
        _write(path, key.to_pem(), private=True, force=True)
        keys[u] = key.public
    out = Roster(keys=keys)
    _write(roster, out.to_json().encode(), private=False, force=True)
    return out
