"""The SecAgg+ messages: frozen dataclasses of ints, bytes and numpy arrays.

Every message carries ``round_id`` and ``stage`` (Bell et al. 2020, Algorithm 1 and
Bonawitz et al. 2017, Figure 4, number the rounds of the protocol the same way):

===========================  ===========  ================  ==============================
message                      stage        direction         content
===========================  ===========  ================  ==============================
:class:`AdvertiseKeys`       ADVERTISE    client -> server  c_pk, s_pk, signature
:class:`NeighbourKeys`       ADVERTISE    server -> client  cohort, t claimed, neighbours'
                                                            (c_pk, s_pk, signature)
:class:`ShareKeys`           SHARE        client -> server  AEAD share bundles, one per nbr
:class:`RoutedShares`        SHARE        server -> client  the bundles addressed to it
:class:`MaskedInput`         MASK         client -> server  y_u (uint64, values < 2^b)
:class:`ConsistencyRequest`  CONSISTENCY  server -> client  the survivor set S
:class:`ConsistencySignature` CONSISTENCY client -> server  signature of (run, round, S)
:class:`UnmaskRequest`       UNMASK       server -> client  S and >= T signatures of it
:class:`UnmaskShares`        UNMASK       client -> server  b shares (v in S), s_sk (not)
===========================  ===========  ================  ==============================

The round's :class:`~fedpriv.secagg.setup.RoundSetup` is never sent: each party derives
it (:func:`fedpriv.secagg.params.derive_setup`).

``to_dict()`` gives plain values (int, bytes, list of int / bytes, numpy array) under
string keys that a Flower ``ConfigRecord`` / ``ArrayRecord`` can hold; ``from_dict()``
validates again and raises :class:`SecAggError` on anything malformed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

import numpy as np

from fedpriv.secagg.errors import SecAggError
from fedpriv.secagg.setup import RoundSetup, Stage
from fedpriv.secagg.wire import word_bytes

__all__ = [
    "AdvertiseKeys",
    "ConsistencyRequest",
    "ConsistencySignature",
    "MaskedInput",
    "Message",
    "NeighbourKeys",
    "RoutedShares",
    "ShareKind",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "message_from_dict",
    "wire_size",
]


#: Flower message type of the ConsistencyCheck stage (to move to fedpriv/messages.py).

_SIG = 64


class ShareKind(enum.IntEnum):
    """Which secret a revealed share belongs to."""

    SELF_MASK = 0  # b_v of a surviving neighbour v
    MASK_KEY = 1  # s_sk_v of a dropped neighbour v


def _ints(name: str, value: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise SecAggError(f"{name} must be a sequence of ints, got {value!r:.60}") from None
    if any(v < 0 for v in out):
        raise SecAggError(f"{name} must be non-negative ints, got {out!r:.60}")
    return out


def _blobs(name: str, value: Any, size: int | None = None) -> tuple[bytes, ...]:
    if isinstance(value, bytes | str) or not hasattr(value, "__iter__"):
        raise SecAggError(f"{name} must be a sequence of bytes, got {type(value).__name__}")
    out = tuple(value)
    if not all(isinstance(v, bytes) for v in out):
        raise SecAggError(f"{name} must hold bytes only")
    if size is not None and any(len(v) != size for v in out):
        raise SecAggError(f"{name} must hold {size}-byte values")
    return out


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise SecAggError(f"{name} must be a non-negative int, got {value!r:.60}")
    return int(value)


class _Base:
    """Shared validation and (de)serialisation of the message dataclasses."""

    __slots__ = ()
    STAGE: ClassVar[Stage]
    _PAIRED: ClassVar[tuple[str, ...]] = ()  # parallel sequences of equal length

    def _validate(self) -> None:
        object.__setattr__(self, "round_id", _int("round_id", self.round_id))  # type: ignore[attr-defined]
        if self.stage != self.STAGE:  # type: ignore[attr-defined]
            raise SecAggError(f"{type(self).__name__}.stage must be {int(self.STAGE)}, got "
                              f"{self.stage!r}")  # type: ignore[attr-defined]
        object.__setattr__(self, "stage", self.STAGE)
        lengths = {f: len(getattr(self, f)) for f in self._PAIRED}
        if len(set(lengths.values())) > 1:
            raise SecAggError(f"{type(self).__name__}: parallel fields differ in length "
                              f"{lengths}")
        if self._PAIRED:
            ids = getattr(self, self._PAIRED[0])
            if len(set(ids)) != len(ids):
                raise SecAggError(f"{type(self).__name__}.{self._PAIRED[0]} has duplicates")

    def to_dict(self) -> dict[str, Any]:
        """Plain values: int, bytes, list of int / bytes, or a numpy array."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = (int(v) if isinstance(v, int) else v if not isinstance(v, tuple)
                           else [int(x) if isinstance(x, int) else x for x in v])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; :class:`SecAggError` on missing or bad fields."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        missing = names - set(data) - {"stage"}
        if missing:
            raise SecAggError(f"{cls.__name__}: missing fields {sorted(missing)}")
        try:
            return cls(**{k: data[k] for k in names if k in data})
        except SecAggError:
            raise
        except (TypeError, ValueError) as err:
            raise SecAggError(f"malformed {cls.__name__}: {err}") from None




@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys(_Base):
    """Stage 1, client -> server: c_pk (channel), s_pk (mask), signed by the client.

    ``signature`` is the sender's identity signature of
    :func:`fedpriv.secagg.identity.advert_payload` (run, round, sender, c_pk, s_pk).
    """

    STAGE: ClassVar[Stage] = Stage.ADVERTISE
    round_id: int
    sender: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes
    stage: int = Stage.ADVERTISE

    def __post_init__(self) -> None:
        self._validate()
        object.__setattr__(self, "sender", _int("sender", self.sender))
        for name in ("c_pk", "s_pk"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 32:
                raise SecAggError(f"{name} must be 32 bytes, got {v!r:.40}")
        if self.c_pk == self.s_pk:
            raise SecAggError("c_pk and s_pk must be distinct keys")
        if not isinstance(self.signature, bytes) or len(self.signature) != _SIG:
            raise SecAggError(f"signature must be {_SIG} bytes, got {self.signature!r:.40}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourKeys(_Base):
    """Stage 1, server -> client: the cohort and its neighbours' signed keys.

    ``cohort`` (the clients that advertised) fixes the graph each client derives;
    ``threshold`` is the t the server says it will use (a client refuses any other
    than its own); each neighbour's keys come with its signature.
    """

    STAGE: ClassVar[Stage] = Stage.ADVERTISE
    _PAIRED: ClassVar[tuple[str, ...]] = ("peers", "c_pks", "s_pks", "signatures")
    round_id: int
    recipient: int
    cohort: tuple[int, ...]
    threshold: int
    peers: tuple[int, ...]
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    stage: int = Stage.ADVERTISE

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "cohort", _ints("cohort", self.cohort))
        object.__setattr__(self, "threshold", _int("threshold", self.threshold))
        object.__setattr__(self, "peers", _ints("peers", self.peers))
        object.__setattr__(self, "c_pks", _blobs("c_pks", self.c_pks, 32))
        object.__setattr__(self, "s_pks", _blobs("s_pks", self.s_pks, 32))
        object.__setattr__(self, "signatures", _blobs("signatures", self.signatures, _SIG))
        self._validate()
        if len(set(self.cohort)) != len(self.cohort):
            raise SecAggError("NeighbourKeys.cohort has duplicates")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys(_Base):
    """Stage 2, client -> server: one AEAD-sealed (b_u, s_sk_u) share bundle per nbr."""

    STAGE: ClassVar[Stage] = Stage.SHARE
    _PAIRED: ClassVar[tuple[str, ...]] = ("recipients", "ciphertexts")
    round_id: int
    sender: int
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    stage: int = Stage.SHARE

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", _int("sender", self.sender))
        object.__setattr__(self, "recipients", _ints("recipients", self.recipients))
        object.__setattr__(self, "ciphertexts", _blobs("ciphertexts", self.ciphertexts))
        self._validate()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RoutedShares(_Base):
    """Stage 2, server -> client: the bundles other clients sealed for the recipient."""

    STAGE: ClassVar[Stage] = Stage.SHARE
    _PAIRED: ClassVar[tuple[str, ...]] = ("senders", "ciphertexts")
    round_id: int
    recipient: int
    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    stage: int = Stage.SHARE

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "senders", _ints("senders", self.senders))
        object.__setattr__(self, "ciphertexts", _blobs("ciphertexts", self.ciphertexts))
        self._validate()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MaskedInput(_Base):
    """Stage 3, client -> server: y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^b."""

    STAGE: ClassVar[Stage] = Stage.MASK
    round_id: int
    sender: int
    y: np.ndarray
    stage: int = Stage.MASK

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", _int("sender", self.sender))
        if not isinstance(self.y, np.ndarray) or self.y.ndim != 1:
            raise SecAggError(f"y must be a 1-D numpy array, got {type(self.y).__name__}")
        if self.y.dtype != np.uint64:
            raise SecAggError(f"y must have dtype uint64, got {self.y.dtype}")
        self._validate()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyRequest(_Base):
    """Stage 4, server -> client: the survivor set S (clients whose y arrived)."""

    STAGE: ClassVar[Stage] = Stage.CONSISTENCY
    round_id: int
    recipient: int
    survivors: tuple[int, ...]
    stage: int = Stage.CONSISTENCY

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "survivors", _ints("survivors", self.survivors))
        self._validate()
        if len(set(self.survivors)) != len(self.survivors):
            raise SecAggError("ConsistencyRequest.survivors has duplicates")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySignature(_Base):
    """Stage 4, client -> server: the sender's signature of (run, round, S)."""

    STAGE: ClassVar[Stage] = Stage.CONSISTENCY
    round_id: int
    sender: int
    signature: bytes
    stage: int = Stage.CONSISTENCY

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", _int("sender", self.sender))
        if not isinstance(self.signature, bytes) or len(self.signature) != _SIG:
            raise SecAggError(f"signature must be {_SIG} bytes, got {self.signature!r:.40}")
        self._validate()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskRequest(_Base):
    """Stage 5, server -> client: S again, with the signatures the clients made of it.

    The client derives who dropped itself (neighbours that shared with it but are not
    in S) and reveals only after T valid signatures of this very S.
    """

    STAGE: ClassVar[Stage] = Stage.UNMASK
    _PAIRED: ClassVar[tuple[str, ...]] = ("signers", "signatures")
    round_id: int
    recipient: int
    survivors: tuple[int, ...]
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]
    stage: int = Stage.UNMASK

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "survivors", _ints("survivors", self.survivors))
        object.__setattr__(self, "signers", _ints("signers", self.signers))
        object.__setattr__(self, "signatures", _blobs("signatures", self.signatures, _SIG))
        self._validate()
        if len(set(self.survivors)) != len(self.survivors):
            raise SecAggError("UnmaskRequest.survivors has duplicates")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskShares(_Base):
    """Stage 5, client -> server: per neighbour, a b share or an s_sk share, never both."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    _PAIRED: ClassVar[tuple[str, ...]] = ("owners", "kinds", "shares")
    round_id: int
    sender: int
    owners: tuple[int, ...]
    kinds: tuple[int, ...]
    shares: tuple[bytes, ...]
    stage: int = Stage.UNMASK

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", _int("sender", self.sender))
        object.__setattr__(self, "owners", _ints("owners", self.owners))
        try:
            kinds = tuple(ShareKind(k) for k in _ints("kinds", self.kinds))
        except ValueError:
            raise SecAggError(f"kinds must be in {[int(k) for k in ShareKind]}") from None
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "shares", _blobs("shares", self.shares))
        self._validate()


Message = (RoundSetup | AdvertiseKeys | NeighbourKeys | ShareKeys | RoutedShares
           | MaskedInput | ConsistencyRequest | ConsistencySignature | UnmaskRequest
           | UnmaskShares)
_BY_NAME = {c.__name__: c for c in (AdvertiseKeys, NeighbourKeys, ShareKeys, RoutedShares,
                                    MaskedInput, ConsistencyRequest, ConsistencySignature,
                                    UnmaskRequest, UnmaskShares)}


def message_from_dict(kind: str, data: dict[str, Any]) -> Message:
    """Rebuild a message of class name ``kind`` from :meth:`to_dict` output."""
    if kind == "RoundSetup":
        return RoundSetup.from_dict(data)
    if kind not in _BY_NAME:
        raise SecAggError(f"unknown message kind {kind!r}; expected one of "
                          f"{sorted(_BY_NAME) + ['RoundSetup']}")
    return _BY_NAME[kind].from_dict(data)  # type: ignore[no-any-return]


def wire_size(msg: Message, *, bits: int | None = None) -> int:
    """Bytes of a message's payload: 8 per int, raw bytes, array ``nbytes``.

    With ``bits`` (the modulus), a :class:`MaskedInput`'s vector counts as it travels:
    ``ceil(bits / 8)`` bytes per coordinate (:func:`fedpriv.secagg.wire.pack`).
    """
    total = 0
    for name, v in msg.to_dict().items():
        if bits is not None and isinstance(msg, MaskedInput) and name == "y":
            total += word_bytes(bits) * v.size
            continue
        items = v if isinstance(v, list) else [v]
        for it in items:
            total += (it.nbytes if isinstance(it, np.ndarray) else len(it)
                      if isinstance(it, bytes) else 8)
    return total
