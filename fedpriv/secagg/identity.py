"""Long-term client identities: Ed25519 signing keys and the roster of public keys.

Bonawitz et al. 2017 (CCS), Section 4, "malicious setting" and Figure 4 (the
active-adversary variant): every client holds a long-term signing key
(``SIG.gen``), and every client learns the other clients' verification keys from a
trusted source *out of band* (here the roster: the run directory in simulation, the
certificates directory or node config in deployment), never from the server. Clients
sign

- their key advertisement, over (run, round, client id, c_pk, s_pk), so the server
  cannot hand a victim public keys it made itself under a real neighbour's id;
- the survivor set in the ConsistencyCheck round, over (run, round, cohort, sorted
  survivors), so the server cannot show two clients two different survivor sets and
  collect both kinds of shares of one victim.

Every signed payload starts with a domain tag naming its purpose, so a signature made
for one purpose never verifies for another.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedpriv.secagg.errors import SecAggError

__all__ = [
    "SIGNATURE_BYTES",
    "IdentityKey",
    "Roster",
    "advert_payload",
    "cohort_digest",
    "consistency_payload",
]

SIGNATURE_BYTES = 64
_PUBLIC_BYTES = 32
_U64 = (1 << 64) - 1


def _u64(name: str, value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64:
        raise SecAggError(f"{name} must be an int in [0, 2^64), got {value!r}")
    return struct.pack(">Q", value)


def advert_payload(*, run_id: int, round_id: int, sender: int, c_pk: bytes,
                   s_pk: bytes, binding: bytes = b"") -> bytes:
    """What a key advertisement signs: domain, run, round, client id, c_pk, s_pk.

    ``binding`` (when not empty): what the round's inputs must agree on beyond the
    protocol, e.g. the distributed-DP plan each client sized its noise share for. A
    client verifies its neighbours' advertisements with its *own* binding, so a cohort
    whose members were shown different plans cannot share keys.
    """
    out = (b"fedpriv-secagg|advertise|" + _u64("run_id", run_id)
           + _u64("round_id", round_id) + _u64("sender", sender) + c_pk + s_pk)
    if binding:
        out += b"|binding|" + _u64("length", len(binding)) + binding
    return out


def cohort_digest(cohort: Iterable[int]) -> bytes:
    """SHA-256 of the sorted cohort: names the view of the cohort a client was shown."""
    ids = sorted(set(cohort))
    return hashlib.sha256(b"fedpriv-secagg|cohort|" + _u64("count", len(ids))
                          + b"".join(_u64("member", v) for v in ids)).digest()


def consistency_payload(*, run_id: int, round_id: int, cohort: Iterable[int],
                        survivors: Iterable[int]) -> bytes:
    """What a ConsistencyCheck signature covers: run, round, cohort digest, sorted S."""
    ids = sorted(set(survivors))
    return (b"fedpriv-secagg|consistency|" + _u64("run_id", run_id)
            + _u64("round_id", round_id) + cohort_digest(cohort)
            + _u64("count", len(ids)) + b"".join(_u64("survivor", v) for v in ids))


class IdentityKey:
    """A client's long-term Ed25519 signing key.

    Parameters
    ----------
    private : bytes, optional
        The raw 32-byte private key; a fresh one from the OS CSPRNG when omitted.
    """

    __slots__ = ("_key", "public")

    def __init__(self, private: bytes | None = None) -> None:
        if private is not None and len(private) != 32:
            raise SecAggError(f"identity private key must be 32 bytes, got {len(private)}")
        self._key = (Ed25519PrivateKey.from_private_bytes(private) if private is not None
                     else Ed25519PrivateKey.generate())
        self.public: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, payload: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``payload``."""
        return self._key.sign(payload)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (to keep on the client's own device only)."""
        return self._key.private_bytes(serialization.Encoding.Raw,
                                       serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (file permissions protect it)."""
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    @classmethod
    def from_pem(cls, data: bytes) -> IdentityKey:
        """Inverse of :meth:`to_pem`; :class:`SecAggError` if it is not Ed25519."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise SecAggError(f"identity key is not a PEM private key: {err}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SecAggError(f"identity key must be Ed25519, got {type(key).__name__}")
        return cls(key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Roster:
    """The clients' identity public keys, obtained out of band: ``{id: 32-byte key}``.

    Attributes
    ----------
    keys : mapping of int to bytes
        Client id (>= 0) to raw Ed25519 public key; keys must be distinct.
    """

    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        clean: dict[int, bytes] = {}
        for u, pk in self.keys.items():
            if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u <= _U64:
                raise SecAggError(f"roster ids must be ints in [0, 2^64), got {u!r}")
            if not isinstance(pk, bytes) or len(pk) != _PUBLIC_BYTES:
                raise SecAggError(f"roster key of client {u} must be {_PUBLIC_BYTES} bytes, "
                                  f"got {pk!r:.40}")
            clean[u] = pk
        if len(set(clean.values())) != len(clean):
            raise SecAggError("roster keys must be distinct (two ids share one key)")
        if not clean:
            raise SecAggError("roster must name at least one client, got none")
        object.__setattr__(self, "keys", MappingProxyType(dict(sorted(clean.items()))))

    def __contains__(self, node: object) -> bool:
        return node in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def digest(self) -> bytes:
        """SHA-256 over the sorted (id, key) pairs: names this roster in logs and docs."""
        h = hashlib.sha256(b"fedpriv-secagg|roster")
        for u, pk in self.keys.items():
            h.update(struct.pack(">Q", u) + pk)
        return h.digest()

    def verify(self, node: int, payload: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``node``'s valid signature of ``payload``."""
        pk = self.keys.get(node)
        if pk is None or not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(pk).verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> str:
        """``{"version": 1, "clients": {"<id>": "<hex key>"}}``."""
        return json.dumps({"version": 1,
                           "clients": {str(u): pk.hex() for u, pk in self.keys.items()}},
                          indent=1)

    @classmethod
    def from_json(cls, text: str) -> Roster:
        """Inverse of :meth:`to_json`; :class:`SecAggError` if malformed."""
        try:
            data = json.loads(text)
            if data.get("version") != 1:
                raise SecAggError(f"roster version must be 1, got {data.get('version')!r}")
            return cls(keys={int(u): bytes.fromhex(pk) for u, pk in data["clients"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if isinstance(err, SecAggError):
                raise
            raise SecAggError(f"malformed roster: {err!r}") from None
