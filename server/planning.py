"""What a DP run will spend, said before round 1 (and kept in summary.json)."""

from __future__ import annotations

from typing import Any

from fedpriv.config import ClipMode, DpMode, RunConfig
from fedpriv.ddp_plan import distributed_plan, model_dimension
from fedpriv.dp_plan import (
    WARN_EPSILON,
    client_sampling_rate,
    planned_central_epsilon,
    planned_record_epsilon,
    planned_user_epsilon,
    record_noise_multiplier,
)
from fedpriv.tasks import client_dataset

__all__ = ["privacy_plan"]


def privacy_plan(cfg: RunConfig) -> dict[str, Any]:
    """The run's planned epsilon, how it was reached, and a warning when it is weak.

    User level: the federation's epsilon after ``rounds`` Poisson-sampled rounds at
    q = clients-per-round / clients. Record level: the largest epsilon any client would
    spend training every round, for the simulation's partition sizes (a deployed client
    computes its own from its data). Record-central: the federation's epsilon after
    ``rounds`` DP-SGD steps at q = ``record-sampling-rate``. Distributed: the
    server-facing epsilon after ``rounds`` sums of the fewest survivors' shares (q = 1),
    and the same with the colluding clients' shares missing.
    """
    plan: dict[str, Any] = {"dp_mode": cfg.privacy.dp_mode.value, "delta": cfg.privacy.delta,
                            "accountant": "pld (dp-accounting)", "rounds": cfg.training.rounds,
                            "reproducible": cfg.training.reproducible}
    if cfg.privacy.dp_mode is DpMode.USER:
        eps = planned_user_epsilon(cfg)
        plan.update(noise_multiplier=cfg.privacy.noise_multiplier,
                    sampling_rate=client_sampling_rate(cfg), epsilon=eps,
                    adaptive_clip=cfg.privacy.clip is ClipMode.ADAPTIVE)
        how = (f"user-level DP: z={cfg.privacy.noise_multiplier:.4g}, "
               f"q={client_sampling_rate(cfg):g} over {cfg.training.rounds} rounds")
    elif cfg.privacy.dp_mode is DpMode.RECORD_CENTRAL:
        eps = planned_central_epsilon(cfg)
        q = cfg.privacy.record_sampling_rate
        plan.update(noise_multiplier=cfg.privacy.noise_multiplier, sampling_rate=q,
                    epsilon=eps, steps=cfg.training.rounds)
        how = (f"record-level DP-SGD noised once a round by the server: sigma="
               f"{cfg.privacy.noise_multiplier:.4g}, q={q:g} over {cfg.training.rounds} "
               f"steps (one a round); against everyone but the server, which sees the "
               f"clients' clipped gradient sums")
    elif cfg.privacy.dp_mode is DpMode.RECORD:
        clients = cfg.training.clients
        sizes = [len(client_dataset(cfg, i, clients)) for i in range(clients)]
        per = {n: planned_record_epsilon(cfg, n) for n in set(sizes)}
        eps = max(per.values())
        sigmas = sorted({record_noise_multiplier(cfg, n) for n in set(sizes)})
        one_round = max(planned_record_epsilon(cfg.with_values(rounds=1), n)
                        for n in set(sizes)) if cfg.privacy.target_epsilon <= 0 else None
        plan.update(epsilon=eps, noise_multiplier_range=[sigmas[0], sigmas[-1]],
                    partition_sizes=[min(sizes), max(sizes)], first_round=one_round)
        how = (f"record-level DP-SGD: sigma {sigmas[0]:.4g}..{sigmas[-1]:.4g} over "
               f"{cfg.training.rounds} rounds, clients of {min(sizes)}..{max(sizes)} examples")
    elif cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        ddp = distributed_plan(cfg, model_dimension(cfg))
        eps = ddp.epsilon
        p = ddp.params
        plan.update(accountant="rdp (Renyi DP of the discrete sum)", epsilon=eps,
                    distributed=ddp.summary())
        how = (f"distributed DP, {p.mechanism.value} shares of variance "
               f"{p.local_variance:.4g} at scale {p.scale:.4g}, {p.bits} bits (wrap-around "
               f"<= {ddp.wrap_probability:.1e} per round), sized for {ddp.min_clients} "
               f"survivors (z={ddp.noise_multiplier:.4g}), q=1 over {cfg.training.rounds} rounds; "
               f"with {ddp.colluders} colluding client(s) leaving out their shares: "
               f"epsilon <= {ddp.epsilon_with_colluders:.3f}")
    else:
        raise ValueError(f"dp-mode must be record, record-central, user or distributed for a "
                         f"plan, got "
                         f"{cfg.privacy.dp_mode}")
    plan["warning"] = eps > WARN_EPSILON
    text = f"this run will spend epsilon <= {eps:.3f} at delta {cfg.privacy.delta:g} ({how})"
    if plan["warning"]:
        text += (f"; WARNING: epsilon above {WARN_EPSILON:g} is a weak guarantee "
                 "(set target-epsilon, or raise noise-multiplier)")
    if plan.get("first_round") and plan["first_round"] > cfg.privacy.max_epsilon:
        text += (f"; one round alone spends up to {plan['first_round']:.3f} > max-epsilon "
                 f"{cfg.privacy.max_epsilon:g}: clients over it refuse round 1")
    elif eps > cfg.privacy.max_epsilon:
        text += f"; max-epsilon {cfg.privacy.max_epsilon:g} will stop it early"
    if cfg.training.reproducible:
        text += "; REPRODUCIBLE: sampling and noise are seeded, epsilon holds only while "
        text += "the seed is secret"
    if cfg.training.fraction_evaluate > 0:
        plan["unprotected_evaluation"] = True
        text += ("; fraction-evaluate > 0: sampled clients send their loss and accuracy on "
                 "their own data, unnoised; no epsilon covers those figures")
    plan["text"] = text
    return plan
