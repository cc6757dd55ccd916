"""The client's side of secure aggregation on Flower messages.

Drives :class:`fedpriv.secagg.ClientSecAgg` through the stages the server sends
(``train.secagg_advertise``, ``train.secagg_share``, the train message itself,
``train.secagg_consistency``, ``train.secagg_unmask``), keeping the round's secret state
in the node's own ``Context.state`` between messages.

What the client takes from its own side, never from the server's messages:

- its identity key and the roster: node config ``secagg-identity``, ``secagg-roster``
  and ``secagg-id`` (deployment; ``fedpriv certs node`` writes them), else, in a
  simulation, ``RUN_DIR/identities/<partition-id>.ed25519`` and ``roster.json``;
- the threshold, graph and minimum survivors (derived, :mod:`fedpriv.secagg.params`);
- the run id (its ``Context``), and the last round it took part in (replays of older
  rounds are refused);
- optionally, the corruption rate and minimum of honest clients it insists on (node
  config ``secagg-corruption-rate``, ``secagg-min-honest``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedpriv.certs import CertError, load_identity, load_roster
from fedpriv.config import DpMode, RunConfig
from fedpriv.messages import CONFIG, NODE_PARTITION_ID, SECAGG, SECAGG_STATE, config_from_record
from fedpriv.privacy.attest import HeadSigner
from fedpriv.secagg import (
    ClientSecAgg,
    ConsistencyRequest,
    IdentityKey,
    NeighbourKeys,
    Roster,
    RoutedShares,
    SecAggAbort,
    SecAggError,
    SecurityParams,
    SumLayout,
    UnmaskRequest,
    layout_for,
    pack,
    params_for,
)

if TYPE_CHECKING:  # distributed DP's planning loads only when the mode is on
    from fedpriv.ddp_plan import DistributedPlan
    from fedpriv.privacy.discrete import UniformSource

__all__ = [
    "NODE_SECAGG_CORRUPTION",
    "NODE_SECAGG_ID",
    "NODE_SECAGG_IDENTITY",
    "NODE_SECAGG_MIN_HONEST",
    "NODE_SECAGG_ROSTER",
    "SimulatedDropout",
    "advertise",
    "consistency",
    "encode_distributed",
    "encode_update",
    "mask",
    "maybe_vanish",
    "share",
    "unmask",
]

NODE_SECAGG_ID = "secagg-id"
NODE_SECAGG_IDENTITY = "secagg-identity"
NODE_SECAGG_ROSTER = "secagg-roster"
NODE_SECAGG_CORRUPTION = "secagg-corruption-rate"
NODE_SECAGG_MIN_HONEST = "secagg-min-honest"
_CLIENT = SECAGG_STATE + "-client"
_LAST = SECAGG_STATE + "-last"


class SimulatedDropout(RuntimeError):
    """The client vanishes mid-round (``dropout-rate`` in simulation)."""


def maybe_vanish(cfg: RunConfig, server_round: int, node_config: dict, stage: int) -> None:
    """Vanish at ``stage`` with probability ``dropout-rate`` (seeded, per client and round).

    A dropping client picks one of stages 2 (share), 3 (masked input) and 4 (unmask).
    """
    if cfg.secagg.dropout_rate <= 0 or NODE_PARTITION_ID not in node_config:
        return
    part = int(node_config[NODE_PARTITION_ID])
    rng = np.random.default_rng([cfg.training.seed, server_round, part, 0xD20])
    drops, at = rng.random() < cfg.secagg.dropout_rate, int(rng.integers(2, 5))
    if drops and at == stage:
        raise SimulatedDropout(f"client {part} vanished before secure-aggregation stage "
                               f"{stage} of round {server_round} (dropout-rate)")


def _identity(cfg: RunConfig, node_config: dict) -> tuple[int, IdentityKey, Roster]:
    """(secagg id, identity key, roster) from the node's own files."""
    try:
        if NODE_SECAGG_IDENTITY in node_config:
            if NODE_SECAGG_ROSTER not in node_config or NODE_SECAGG_ID not in node_config:
                raise SecAggError(f"node config names {NODE_SECAGG_IDENTITY} but not "
                                  f"{NODE_SECAGG_ROSTER} and {NODE_SECAGG_ID}")
            return (int(node_config[NODE_SECAGG_ID]),
                    load_identity(str(node_config[NODE_SECAGG_IDENTITY])),
                    load_roster(str(node_config[NODE_SECAGG_ROSTER])))
        if NODE_PARTITION_ID in node_config and cfg.deployment.run_dir:
            node = int(node_config[NODE_PARTITION_ID])
            root = Path(cfg.deployment.run_dir) / "identities"
            return node, load_identity(root / f"{node}.ed25519"), load_roster(
                root / "roster.json")
    except CertError as err:
        raise SecAggError(str(err)) from None
    raise SecAggError(f"no secure-aggregation identity: set the node config keys "
                      f"{NODE_SECAGG_IDENTITY}, {NODE_SECAGG_ROSTER} and {NODE_SECAGG_ID} "
                      "(`fedpriv certs node` writes them)")


def head_identity(cfg: RunConfig, node_config: dict) -> tuple[int, HeadSigner] | None:
    """(roster id, signer) for signing this client's ledger head, if it has an identity.

    The same long-term Ed25519 key as secure aggregation's (node config or, in
    simulation, ``RUN_DIR/identities``); ``None`` when the node has none.
    """
    try:
        node, key, _ = _identity(cfg, dict(node_config))
    except SecAggError:
        return None
    return node, HeadSigner.from_private_bytes(key.private_bytes())


def _params(cfg: RunConfig, node_config: Any) -> SecurityParams:
    """The run's security parameters, with the node's own pins applied.

    ``secagg-corruption-rate`` and ``secagg-min-honest`` in the node config (set by the
    device's operator) replace the run's values: they define what the server may learn,
    so a deployed client should not take them from the server's message. A pin that
    differs from the server's makes the derived setups differ, and the client refuses
    the round (fails safe).
    """
    params = params_for(cfg.secagg)
    pins: dict[str, Any] = {}
    if NODE_SECAGG_CORRUPTION in node_config:
        pins["corruption_rate"] = float(node_config[NODE_SECAGG_CORRUPTION])
    if NODE_SECAGG_MIN_HONEST in node_config:
        pins["min_honest"] = int(node_config[NODE_SECAGG_MIN_HONEST])
    try:
        return dataclasses.replace(params, **pins) if pins else params
    except ValueError as err:
        raise SecAggError(f"node config: {err}") from None


def modulus_bits(cfg: RunConfig, layout: SumLayout | None = None) -> int:
    """The run's modulus bits b: the layout's for all ``clients``, never clamped.

    Sized for every enrolled client, not the expected cohort: under user-level DP the
    cohort is a Poisson sample and may be larger than ``clients-per-round``. Under
    distributed DP, the plan's b (:func:`fedpriv.ddp_plan.distributed_plan`), which the
    client derives itself from the run config and the model's size.
    """
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        from fedpriv.ddp_plan import distributed_plan, model_dimension

        return distributed_plan(cfg, model_dimension(cfg)).params.bits
    return (layout or layout_for(cfg.secagg)).modulus_bits(cfg.training.clients)


def _round(msg: Message) -> tuple[RunConfig, int, dict[str, Any]]:
    cfg, server_round = config_from_record(msg.content[CONFIG])
    rec = dict(msg.content[SECAGG])
    if int(rec.get("round_id", -1)) != server_round:  # type: ignore[call-overload]
        raise SecAggError(f"secure-aggregation payload for round {rec.get('round_id')} in "
                          f"a round-{server_round} message")
    return cfg, server_round, rec


def _load(context: Context, cfg: RunConfig, server_round: int) -> ClientSecAgg:
    if _CLIENT not in context.state.config_records:
        raise SecAggError("no secure-aggregation state: this client missed the earlier "
                          "stages (or aborted the round)")
    state = dict(context.state[_CLIENT])
    if int(state["round"]) != server_round or int(state["run"]) != int(context.run_id):  # type: ignore[call-overload]
        raise SecAggError(f"message for round {server_round}, but this client's state is "
                          f"for round {state['round']}")
    node, identity, roster = _identity(cfg, dict(context.node_config))
    if int(state["node"]) != node:  # type: ignore[call-overload]
        raise SecAggError(f"this client's round state is for secagg id {state['node']}, "
                          f"its identity is {node}")
    return ClientSecAgg.restore(state, params=_params(cfg, context.node_config),
                                identity=identity,
                                roster=roster)


def _save(context: Context, client: ClientSecAgg) -> None:
    context.state[_CLIENT] = ConfigRecord(client.export())


def _forget(context: Context) -> None:
    if _CLIENT in context.state.config_records:
        del context.state[_CLIENT]


def _step(context: Context, fn: Any) -> Any:
    """Run a stage; on :class:`SecAggAbort` forget the round's secrets and re-raise."""
    try:
        return fn()
    except SecAggAbort:
        _forget(context)
        raise


def advertise(msg: Message, context: Context) -> RecordDict:
    """Stage 1: fresh key pairs for the round; reply with the signed public halves."""
    cfg, server_round, rec = _round(msg)
    last = (int(context.state[_LAST]["round"])  # type: ignore[call-overload]
            if _LAST in context.state.config_records else -1)
    if server_round <= last:
        raise SecAggError(f"round {server_round} is not after round {last}, the last this "
                          "client took part in (replayed round)")
    floor, binding = 0, b""
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        floor, binding = _check_plan(cfg, rec)
    node, identity, roster = _identity(cfg, dict(context.node_config))
    client = ClientSecAgg(node_id=node, run_id=int(context.run_id), round_id=server_round,
                          params=_params(cfg, context.node_config), identity=identity,
                          roster=roster,
                          modulus_bits=modulus_bits(cfg), max_cohort=cfg.training.clients,
                          min_sum=floor, binding=binding)
    adv = client.advertise_keys()
    context.state[_LAST] = ConfigRecord({"round": server_round})
    _save(context, client)
    return RecordDict({SECAGG: ConfigRecord(adv.to_dict())})


def _check_plan(cfg: RunConfig, rec: dict[str, Any]) -> tuple[int, bytes]:
    """Distributed DP: refuse unless the server's plan is the one this client derives.

    Returns the plan's n_min (the fewest shares the client's noise is sized for and its
    ledger charges, which the round's secure aggregation enforces as a floor on any sum
    the client helps unmask: ``ClientSecAgg.min_sum``) and the plan's digest, which its
    key advertisement carries and its neighbours' must (``ClientSecAgg.binding``): every
    member of the cohort sized its share by the same plan.
    """
    from fedpriv.ddp_plan import distributed_plan, model_dimension

    plan = distributed_plan(cfg, model_dimension(cfg))
    mine = plan.digest
    theirs = rec.get("ddp_plan")
    if theirs != mine:
        raise SecAggError(
            f"the server's distributed-DP plan ({str(theirs)[:12] if theirs else 'none sent'})"
            f" is not the one this client derives from the run config ({mine[:12]}): its "
            "noise share would not give the epsilon the ledgers record, or the sum would "
            "not decode; refusing the round before any data is used")
    return plan.min_clients, mine.encode()


def round_floor(context: Context, server_round: int) -> int | None:
    """The survivor floor this round's secure aggregation was set up with, if any.

    The train stage charges the ledger for the plan's n_min; it must be the floor the
    round's keys were advertised under (stage 1), or a server could name one plan to the
    masking stages and another to the ledger.
    """
    if _CLIENT not in context.state.config_records:
        return None
    state = context.state[_CLIENT]
    if int(state["round"]) != server_round:  # type: ignore[call-overload]
        return None
    return int(state.get("min-sum", 0))  # type: ignore[call-overload]


def _stage(msg: Message, context: Context, run: Any, *, last: bool = False) -> Any:
    """One stage after the first: restore the round's state, run it, keep or forget it.

    ``run(client, rec)`` is the state machine's step on the stage's payload; the state
    is saved for the next stage, or forgotten after the ``last`` one (and on abort).
    """
    cfg, server_round, rec = _round(msg)
    client = _load(context, cfg, server_round)
    out = _step(context, lambda: run(client, rec))
    if last:
        _forget(context)  # the round's secrets are not needed any more
    else:
        _save(context, client)
    return out


def share(msg: Message, context: Context) -> RecordDict:
    """Stage 2: verify the neighbours' signed keys; encrypted shares for each."""
    out = _stage(msg, context, lambda c, rec: c.share_keys(NeighbourKeys.from_dict(rec)))
    return RecordDict({SECAGG: ConfigRecord(out.to_dict())})


def encode_update(update: dict[str, np.ndarray], keys: list[str], *, weight: int,
                  unclipped: int, loss: float, cfg: RunConfig, rng: np.random.Generator,
                  noise: np.ndarray | None = None) -> np.ndarray:
    """x_u = [w * enc(Delta) + z, w, unclipped, w * loss]: metadata inside the sum.

    See :class:`fedpriv.secagg.SumLayout`; ``noise`` is an optional integer noise share
    (distributed DP), bounded by the layout's ``noise_bound``.
    """
    layout = layout_for(cfg.secagg)
    flat = np.concatenate([np.asarray(update[k], np.float64).ravel() for k in keys])
    try:
        return layout.encode(flat, weight=weight, unclipped=unclipped, loss=loss, rng=rng,
                             bits=modulus_bits(cfg, layout), noise=noise)
    except ValueError as err:
        raise SecAggError(str(err)) from None


def encode_distributed(update: dict[str, np.ndarray], keys: list[str], *,
                       plan: DistributedPlan, run_id: str, server_round: int,
                       rng: np.random.Generator, source: UniformSource | None = None,
                       noise_scale: float = 1.0) -> np.ndarray:
    """x_u = [enc(Delta) with the noise share (d' coordinates), 1, 0, 0] mod 2^b.

    ``enc`` is :func:`fedpriv.privacy.discrete.encode` (clip to C, rotate with the
    round's public seed, scale by gamma, round conditionally, add this client's share of
    variance V, reduce mod 2^b), with the plan this client derived itself. The weight
    slot holds 1 (the server learns only how many encodings it summed, which it knows),
    and the unclipped and loss slots hold 0: under distributed DP the server is not
    trusted with any un-noised function of the data, and a fixed clip needs neither.

    ``noise_scale`` multiplies the share's standard deviation; anything but 1 makes the
    ledger's epsilon false, and it exists only for tests (see ``TEST_ONLY_NOISE_SCALE``).
    """
    from fedpriv.ddp_plan import rotation_seed
    from fedpriv.privacy.discrete.codec import encode as ddp_encode

    flat = np.concatenate([np.asarray(update[k], np.float64).ravel() for k in keys])
    params = plan.params
    if flat.shape != (params.dimension,):
        raise SecAggError(f"the update has {flat.size} parameters, the run's model "
                          f"{params.dimension}: the round's model is not the run's")
    if noise_scale != 1.0:
        params = dataclasses.replace(params,
                                     local_variance=params.local_variance * noise_scale ** 2)
    seed = rotation_seed(run_id, server_round)
    enc = ddp_encode(flat, params, seed, rng, source=source)  # (d',) uint64 in [0, 2^b)
    meta = np.array([1, 0, 0], dtype=np.uint64)  # weight, unclipped, loss (META_SLOTS)
    return np.concatenate([enc, meta])  # (d' + 3,)


def mask(msg: Message, context: Context, x: np.ndarray) -> np.ndarray:
    """Stage 3: the masked vector of ``x`` as it travels (called from the train handler).

    Each coordinate in the bytes the round's modulus needs (:func:`fedpriv.secagg.pack`):
    6 instead of 8 for the default 46 bits, 2 for a 14-bit distributed-DP plan.
    """
    def masked(c: ClientSecAgg, rec: dict[str, Any]) -> np.ndarray:
        return pack(c.mask_input(RoutedShares.from_dict(rec), x).y, c.modulus_bits)
    return cast(np.ndarray, _stage(msg, context, masked))


def consistency(msg: Message, context: Context) -> RecordDict:
    """Stage 4: sign the survivor set (once), if it is large and connected enough."""
    out = _stage(msg, context,
                 lambda c, rec: c.sign_survivors(ConsistencyRequest.from_dict(rec)))
    return RecordDict({SECAGG: ConfigRecord(out.to_dict())})


def unmask(msg: Message, context: Context) -> RecordDict:
    """Stage 5: after enough signatures of the same set, b or s_sk shares, never both."""
    out = _stage(msg, context,
                 lambda c, rec: c.reveal_shares(UnmaskRequest.from_dict(rec)), last=True)
    return RecordDict({SECAGG: ConfigRecord(out.to_dict())})
