"""The SecAgg+ messages: frozen dataclasses of ints, bytes and numpy arrays.

Every message carries ``round_id`` and ``stage`` (Bell et al. 2020, Algorithm 1 and
Bonawitz et al. 2017, Figure 4, number the rounds of the protocol the same way):

=====================  =========  ==================  ==================================
message                stage      direction           content
=====================  =========  ==================  ==================================
:class:`RoundSetup`    SETUP      server -> all       graph, t, b, vector length
:class:`AdvertiseKeys` ADVERTISE  client -> server    c_pk, s_pk
:class:`NeighbourKeys` ADVERTISE  server -> client    neighbours' (c_pk, s_pk)
:class:`ShareKeys`     SHARE      client -> server    AEAD share bundles, one per nbr
:class:`RoutedShares`  SHARE      server -> client    the bundles addressed to it
:class:`MaskedInput`   MASK       client -> server    y_u (uint64, values < 2^b)
:class:`UnmaskRequest` UNMASK     server -> client    surviving / dropped neighbours
:class:`UnmaskShares`  UNMASK     client -> server    b shares (survivors), s_sk (dropped)
=====================  =========  ==================  ==================================

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

__all__ = [
    "AdvertiseKeys",
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
    """Stage 1, client -> server: the round's public keys c_pk (channel), s_pk (mask)."""

    STAGE: ClassVar[Stage] = Stage.ADVERTISE
    round_id: int
    sender: int
    c_pk: bytes
    s_pk: bytes
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourKeys(_Base):
    """Stage 1, server -> client: the keys of the recipient's neighbours that advertised."""

    STAGE: ClassVar[Stage] = Stage.ADVERTISE
    _PAIRED: ClassVar[tuple[str, ...]] = ("peers", "c_pks", "s_pks")
    round_id: int
    recipient: int
    peers: tuple[int, ...]
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]
    stage: int = Stage.ADVERTISE

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "peers", _ints("peers", self.peers))
        object.__setattr__(self, "c_pks", _blobs("c_pks", self.c_pks, 32))
        object.__setattr__(self, "s_pks", _blobs("s_pks", self.s_pks, 32))
        self._validate()


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
class UnmaskRequest(_Base):
    """Stage 4, server -> client: which of its neighbours survived / dropped."""

    STAGE: ClassVar[Stage] = Stage.UNMASK
    round_id: int
    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    stage: int = Stage.UNMASK

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipient", _int("recipient", self.recipient))
        object.__setattr__(self, "survivors", _ints("survivors", self.survivors))
        object.__setattr__(self, "dropped", _ints("dropped", self.dropped))
        self._validate()
        both = set(self.survivors) & set(self.dropped)
        if both:
            raise SecAggError(f"clients {sorted(both)} named both survivor and dropped: "
                              "revealing both shares would expose their input")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskShares(_Base):
    """Stage 4, client -> server: per neighbour, a b share or an s_sk share, never both."""

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
           | MaskedInput | UnmaskRequest | UnmaskShares)
_BY_NAME = {c.__name__: c for c in (AdvertiseKeys, NeighbourKeys, ShareKeys, RoutedShares,
                                    MaskedInput, UnmaskRequest, UnmaskShares)}


def message_from_dict(kind: str, data: dict[str, Any]) -> Message:
    """Rebuild a message of class name ``kind`` from :meth:`to_dict` output."""
    if kind == "RoundSetup":
        return RoundSetup.from_dict(data)
    if kind not in _BY_NAME:
        raise SecAggError(f"unknown message kind {kind!r}; expected one of "
                          f"{sorted(_BY_NAME) + ['RoundSetup']}")
    return _BY_NAME[kind].from_dict(data)  # type: ignore[no-any-return]


def wire_size(msg: Message) -> int:
    """Bytes of a message's payload: 8 per int, raw bytes, array ``nbytes``."""
    total = 0
    for v in msg.to_dict().values():
        items = v if isinstance(v, list) else [v]
        for it in items:
            total += (it.nbytes if isinstance(it, np.ndarray) else len(it)
                      if isinstance(it, bytes) else 8)
    return total
