"""What a ClientApp does with a training or evaluation message: the heavy half.

Imported on the first ``train`` or ``evaluate`` message only (see :mod:`client.app`):
torch, Opacus, the task's data and the accountant load here, never for the
secure-aggregation stages that need none of them.
"""


from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.canary import canary_reply, is_canary
from client.data import (
    client_identity,
    evaluation_refusal,
    local_data,
    node_overrides,
    node_refusal,
)
from client.privacy import (
    LEDGER_PATH_KEY,
    budget_refusal,
    central_gradient_sum,
    client_ledger,
    dp_sgd_train,
    event_json,
    planned_event,
    privacy_generator,
    replay_dir,
    user_update,
)
from client.replay import Payload, ReplayCache, model_digest
from client.secagg import (
    encode_distributed,
    encode_update,
    head_identity,
    mask,
    maybe_vanish,
    round_floor,
)
from fedpriv.config import DpMode, RunConfig, StrategyName
from fedpriv.messages import (
    ARRAYS,
    CLIENT_EPSILON,
    CLIENT_ID,
    CONFIG,
    DP_EVENT,
    EVAL_ACCURACY,
    EVAL_LOSS,
    LEDGER_HEAD,
    LEDGER_IN_RUN_DIR,
    LEDGER_SIGNATURE,
    MASKED,
    METRICS,
    NODE_PARTITION_ID,
    NUM_EXAMPLES,
    PRIVACY,
    REFUSED,
    REFUSED_REASON,
    ROUND_CLIP_NORM,
    SECAGG,
    SIGNER_ID,
    TRAIN_LOSS,
    UNCLIPPED,
    UPDATE,
    UPDATE_WEIGHT,
    config_from_record,
)
from fedpriv.tasks import (
    build_task_model,
    evaluate,
    model_inputs,
    resolve_device,
    task_criterion,
    to_loader,
    train_epochs,
)
from fedpriv.tasks.optim import Sgd
from strategies.updates import numpy_record

if TYPE_CHECKING:  # DP-only: the accountant (dp-accounting, scipy) loads under a DP mode
    from fedpriv.privacy import DistributedNoiseEvent, DpEvent, PrivacyLedger
    from fedpriv.privacy.attest import HeadSigner
    from fedpriv.privacy.discrete import UniformSource

__all__ = ["evaluate_reply", "train_reply"]


def _signed_head(ledger: PrivacyLedger, identity: tuple[int, HeadSigner] | None,
                 node_config: dict) -> dict[str, bool | int | str]:
    """The ledger's head, where it lives, and the head signed with the identity key."""
    seq, digest = ledger.head()
    out: dict[str, bool | int | str] = {
        LEDGER_HEAD: f"{seq}:{digest}",
        LEDGER_IN_RUN_DIR: not node_config.get(LEDGER_PATH_KEY)}
    if identity is not None and ledger.signer == identity[1].public:
        out[SIGNER_ID] = identity[0]
        out[LEDGER_SIGNATURE] = identity[1].sign(run_id=ledger.run_id, scope=ledger.scope,
                                                 seq=seq, head_hash=digest)
    return out


#: Beside a client's ledger: its head signed with the identity key, rewritten at every
#: charge, so that a ledger whose client charged a round and then dropped before its reply
#: (the server never saw that head) still proves it was not rewritten (``fedpriv audit``).
HEAD_FILE_SUFFIX = ".head.json"


def _keep_signed_head(ledger: PrivacyLedger, signed: dict[str, bool | int | str]) -> None:
    """Write the head :func:`_signed_head` signed beside the ledger (when it was signed)."""
    if LEDGER_SIGNATURE not in signed:
        return
    import json

    from fedpriv.durable import write_bytes

    seq, digest = str(signed[LEDGER_HEAD]).split(":", 1)
    record = {"seq": int(seq), "hash": digest, "signer": signed[SIGNER_ID],
              "signature": signed[LEDGER_SIGNATURE]}
    write_bytes(ledger.path.with_name(ledger.path.name + HEAD_FILE_SUFFIX),
                json.dumps(record).encode())


def _reply(msg: Message, records: dict) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def train_reply(msg: Message, context: Context) -> Message:
    """Train the received global model on local data and reply with the model or update.

    With ``dp-mode = record`` training is DP-SGD; with ``dp-mode = user`` the reply is
    the clipped update; with ``dp-mode = distributed`` it is the clipped update encoded
    with this client's discrete noise share, then masked (the server can unmask only the
    noised sum). With any DP mode the client first checks its own budget in its
    own ledger, refuses the round if it would be exceeded, and records the round's DP
    event before replying. A round this run already charged (a resumed run asking again)
    is answered with the payload already released, uncharged (see :mod:`client.replay`).

    What leaves the device: without DP, the model, the example count and the training
    loss. Under any DP mode, no training loss (an unnoised function of the data). Under
    user-level DP, no example count either (the update is unweighted). Under secure
    aggregation nothing per-client travels beside the masked vector: the count and loss
    ride inside it and the server learns only their totals.
    """
    cfg, server_round = config_from_record(msg.content[CONFIG])
    node_config = dict(context.node_config)
    cfg = node_overrides(cfg, node_config)
    refusal = node_refusal(cfg, node_config)
    if refusal:  # before any data is touched; the server sees the node fail with this
        raise PermissionError(f"the node refuses the round: {refusal}")
    round_clip = float(msg.content[CONFIG].get(ROUND_CLIP_NORM, cfg.privacy.clip_norm))
    if is_canary(cfg, node_config):
        return _reply(msg, canary_reply(cfg, node_config, msg, round_clip))
    global_state = msg.content[ARRAYS].to_torch_state_dict()
    client_id = client_identity(node_config, context.node_id)
    run_id = cfg.deployment.run_id or str(context.run_id)

    ledger = event = cache = identity = None
    signed: dict[str, bool | int | str] = {}  # the head signed at this round's charge
    payload: Payload | None = None
    privacy: dict[str, bool | float | str] = {CLIENT_ID: client_id}
    if cfg.privacy.dp_mode is not DpMode.NONE:
        digest = model_digest({k: v.numpy() for k, v in global_state.items()})
        identity = head_identity(cfg, node_config)
        ledger = client_ledger(cfg, node_config, client_id, run_id,
                               signer=identity[1].public if identity else None)
        cache = ReplayCache(ledger.path, ledger.scope, directory=replay_dir(cfg, node_config))
        cache.discard_before(run_id=run_id, server_round=server_round)
        if _charged(ledger, run_id, server_round):
            payload = cache.load(run_id=run_id, server_round=server_round, model=digest)
            reason = "" if payload is not None else (
                f"round {server_round} of run {run_id} is already charged to its ledger and "
                "the update it released is not kept for this model; it will not be charged "
                "twice")
        else:
            event = planned_event(cfg, len(local_data(cfg, node_config)), round_clip)
            reason = budget_refusal(ledger, event, cfg)  # before any data is touched
            if not reason and cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
                reason = _floor_refusal(cast("DistributedNoiseEvent", event),
                                        round_floor(context, server_round))
        if reason:
            privacy.update({REFUSED: True, REFUSED_REASON: reason,
                            **_signed_head(ledger, identity, node_config)})
            ledger.close()
            return _reply(msg, {METRICS: MetricRecord({}), PRIVACY: ConfigRecord(privacy)})

    if payload is None:
        try:
            payload = _train_payload(cfg, msg, node_config, global_state, event, round_clip,
                                     server_round)
        except BaseException:
            if ledger is not None:
                ledger.close()
            raise
        if ledger is not None and event is not None and cache is not None:
            # kept, then recorded under this run's id, before anything leaves the device
            cache.save(run_id=run_id, server_round=server_round, model=digest,
                       payload=payload)
            ledger.append(server_round, event, run_id=run_id)
            signed = _signed_head(ledger, identity, node_config)  # the head sent, too
            _keep_signed_head(ledger, signed)
    content, metrics = _content(cfg, msg, context, payload, server_round)
    if ledger is not None:
        from fedpriv.privacy import epsilon

        spent = epsilon([ev for _, ev in ledger.events()], ledger.delta)
        privacy.update({REFUSED: False, CLIENT_EPSILON: spent,
                        DP_EVENT: str(payload.info["event"]),
                        **(signed or _signed_head(ledger, identity, node_config))})
        ledger.close()
    return _reply(msg, {**content, METRICS: MetricRecord(metrics),
                        PRIVACY: ConfigRecord(privacy)})


def _floor_refusal(event: DistributedNoiseEvent, floor: int | None) -> str:
    """Why a distributed-DP round's charge would not match what its secure sum enforces.

    The ledger charges the sum of ``event.clients`` noise shares; the round's secure
    aggregation (set up at stage 1) refuses to help unmask any sum of fewer than
    ``floor``. The two come from the plan of two different messages, so a server could
    otherwise make the client charge for more shares than it then insists on.
    """
    if floor is None:
        return ("no secure-aggregation state for this round (its keys were never "
                "advertised); the noise share would not be masked")
    if floor != event.clients:
        return (f"the train message's plan charges a sum of {event.clients} noise shares, "
                f"but this round's secure aggregation was set up for {floor}")
    return ""


def _charged(ledger: PrivacyLedger, run_id: str, server_round: int) -> bool:
    """Whether this run's ``server_round`` is already in the ledger."""
    return any(e.is_event and e.run_id == run_id and e.round == server_round
               for e in ledger.entries())


def _train_payload(cfg: RunConfig, msg: Message, node_config: dict, global_state: dict,
                   event: DpEvent | None, round_clip: float, server_round: int) -> Payload:
    """Train on local data; what this round releases, before any masking."""
    data = model_inputs(cfg, local_data(cfg, node_config))  # scatternet: coefficients, once
    device = resolve_device(cfg.deployment.device)
    model = build_task_model(cfg, device=device)
    model.load_state_dict(global_state)
    model.to(device)
    part = int(node_config.get(NODE_PARTITION_ID, 0))
    mu = cfg.training.proximal_mu if cfg.training.strategy is StrategyName.FEDPROX else 0.0
    if cfg.privacy.dp_mode is DpMode.RECORD_CENTRAL:
        # one step of centralised DP-SGD: the clipped sum of a Poisson sample; the server
        # adds the noise (client.privacy.central_gradient_sum)
        update, loss, drawn = central_gradient_sum(
            model, data, cfg, device=device,
            sampling=privacy_generator(cfg, "cpu", server_round, part, 1))
        bad = [k for k, v in update.items() if not np.all(np.isfinite(v))]
        if bad:  # nothing is sent, so nothing is spent or recorded
            raise ValueError(f"the gradient sum has non-finite values in {', '.join(bad)}; "
                             "the update is not sent")
        return Payload(kind="update", arrays=update,
                       info={"event": event_json(event) if event is not None else "",
                             "loss": float(loss), "examples": len(data),
                             "weight": len(data), "unclipped": 0})
    if event is not None and _is_dp_sgd(event):
        loss = dp_sgd_train(
            model, data, cfg, event=event, device=device, proximal_mu=mu,
            sampling=privacy_generator(cfg, "cpu", server_round, part, 1),
            noise=privacy_generator(cfg, device, server_round, part, 2))
    else:
        loader = to_loader(data, cfg.training.batch_size, shuffle=True,
                           generator=privacy_generator(cfg, "cpu", server_round, part))
        trainable = [p for p in model.parameters() if p.requires_grad]
        # torch.optim.SGD's update without importing torch._dynamo (fedpriv.tasks.optim)
        optimizer = Sgd(trainable, lr=cfg.training.lr, momentum=cfg.training.momentum)
        global_params = [p.detach().clone() for p in trainable] if mu > 0 else None
        loss = train_epochs(model, loader, optimizer, epochs=cfg.training.local_epochs,
                            device=device,
                            proximal_mu=mu, global_params=global_params,
                            criterion=task_criterion(cfg))

    local_state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    bad = [k for k, v in local_state.items() if v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:  # nothing is sent, so nothing is spent or recorded
        raise ValueError(f"training produced non-finite values in {', '.join(bad)}; the "
                         "update is not sent")
    info: dict[str, Any] = {"event": event_json(event) if event is not None else "",
                            "loss": float(loss), "examples": len(data)}
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        # The release includes the noise: the payload kept for a replay is the encoded,
        # noised vector itself, so a resumed run asking again gets exactly this release.
        update, _ = user_update(local_state, global_state, cfg.privacy.clip_norm)
        from fedpriv.ddp_plan import distributed_plan, model_dimension
        from strategies.dp_fedavg import test_only_noise_scale

        keys = list(msg.content[ARRAYS].keys())  # the order the server decodes in
        plan = distributed_plan(cfg, model_dimension(cfg))
        x = encode_distributed(
            update, keys, plan=plan, run_id=cfg.deployment.run_id, server_round=server_round,
            rng=_rounding_rng(cfg, server_round, part),
            source=_noise_source(cfg, server_round, part),
            noise_scale=test_only_noise_scale())
        return Payload(kind="encoded", arrays={"x": x}, info=info)
    if cfg.privacy.dp_mode is DpMode.USER or SECAGG in msg.content.config_records:
        if cfg.privacy.dp_mode is DpMode.USER:  # clipped, unweighted (McMahan et al. 2018)
            update, unclipped = user_update(local_state, global_state, round_clip)
            weight = 1
        else:  # weighted by the example count inside the sum
            update = {k: local_state[k].numpy().astype(np.float32)
                      - global_state[k].numpy().astype(np.float32) for k in global_state}
            unclipped, weight = False, len(data)
        info.update(weight=int(weight), unclipped=int(unclipped))
        return Payload(kind="update", arrays={k: np.asarray(v) for k, v in update.items()},
                       info=info)
    return Payload(kind="arrays", arrays={k: v.numpy() for k, v in local_state.items()},
                   info=info)


def _is_dp_sgd(event: DpEvent) -> bool:
    from fedpriv.privacy import DpSgdEvent  # an event exists only under a DP mode

    return isinstance(event, DpSgdEvent)


def _noise_source(cfg: RunConfig, server_round: int, part: int) -> UniformSource:
    """Uniforms for the noise share: OS-keyed ChaCha20, seeded only if reproducible."""
    from fedpriv.privacy.discrete import SecureUniforms, SeededUniforms

    if cfg.training.reproducible:
        return SeededUniforms(np.random.default_rng([cfg.training.seed, server_round, part, 4]))
    return SecureUniforms()


def _rounding_rng(cfg: RunConfig, server_round: int, part: int) -> np.random.Generator:
    """Coins of the randomised rounding (need not be secret; seeded if reproducible)."""
    if cfg.training.reproducible:
        return np.random.default_rng([cfg.training.seed, server_round, part, 5])
    return np.random.default_rng()


def _content(cfg: RunConfig, msg: Message, context: Context, payload: Payload,
             server_round: int) -> tuple[dict[str, ArrayRecord], dict[str, float]]:
    """The reply's arrays and metrics for ``payload`` (masked under secure aggregation)."""
    info = payload.info
    metrics: dict[str, float] = {}
    if cfg.privacy.dp_mode is DpMode.NONE:
        metrics.update({NUM_EXAMPLES: int(info["examples"]), TRAIN_LOSS: float(info["loss"])})
    elif cfg.privacy.dp_mode is DpMode.RECORD:
        metrics[NUM_EXAMPLES] = int(info["examples"])  # FedAvg's weight; q and steps reveal it
    keys = list(msg.content[ARRAYS].keys())  # the global model's order (safetensors sorts)
    if payload.kind == "arrays":
        state = {k: torch.from_numpy(np.array(payload.arrays[k])) for k in keys}
        return {ARRAYS: ArrayRecord(state)}, metrics
    if payload.kind == "encoded":  # distributed DP: already noised; only masking remains
        maybe_vanish(cfg, server_round, dict(context.node_config), stage=3)
        x = np.ascontiguousarray(payload.arrays["x"], dtype=np.uint64)
        return {MASKED: numpy_record({"y": mask(msg, context, x)})}, {}
    if SECAGG in msg.content.config_records:
        maybe_vanish(cfg, server_round, dict(context.node_config), stage=3)
        x = encode_update(
            payload.arrays, keys, weight=int(info["weight"]), unclipped=int(info["unclipped"]),
            # Under DP the loss is an unnoised function of the data: its slot is 0.
            loss=float(info["loss"]) if cfg.privacy.dp_mode is DpMode.NONE else 0.0,
            cfg=cfg, rng=np.random.default_rng(),
        )
        # nothing per-client beside the masked vector: count and loss ride inside it
        return {MASKED: numpy_record({"y": mask(msg, context, x)})}, {}
    metrics = {UPDATE_WEIGHT: float(info["weight"]), UNCLIPPED: float(info["unclipped"])}
    return {UPDATE: numpy_record({k: payload.arrays[k] for k in keys})}, metrics


def evaluate_reply(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the client's local data."""
    cfg, _ = config_from_record(msg.content[CONFIG])
    refusal = evaluation_refusal(cfg, context.node_config)
    if refusal:
        raise PermissionError(f"the node refuses to evaluate: {refusal}")
    if is_canary(cfg, context.node_config):
        raise RuntimeError("a canary client holds no data to evaluate on")
    data = model_inputs(cfg, local_data(cfg, context.node_config))
    device = resolve_device(cfg.deployment.device)
    model = build_task_model(cfg, device=device)
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    model.to(device)
    loss, acc = evaluate(model, data, device=device)
    reply = RecordDict({
        METRICS: MetricRecord({NUM_EXAMPLES: len(data), EVAL_LOSS: loss, EVAL_ACCURACY: acc}),
    })
    return Message(reply, reply_to=msg)
