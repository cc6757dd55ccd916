"""Issue 16's goals table, the opening of ``bench/README.md``: every privacy cost as a
ratio beside its goal and, for a goal a run misses, what limits it and what would lift it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["goals_table"]


#: What limits a goal that a run does not meet (the section named holds the profile).
_LIMITS = {
    "full": "five message exchanges a round against plain FedAvg's one (the malicious-"
            "server protocol), each waiting for Flower's simulation engine, which picks "
            "messages up every 0.1 s (see round). Would lift it: a shorter scan in "
            "Flower's engine (it has no knob: `vce_api.add_messages_to_queue` waits "
            "0.1 s), or fewer exchanges: the next round's keys advertised in this round's "
            "unmask reply would make four, still over 2× at 0.1 s an exchange",
    "deploy": "five exchanges a round, each paying a SuperNode's fixed 3 s idle poll and a "
              "fresh ClientApp process, both Flower's (see deploy). Would lift it: a "
              "SuperNode that pulls again at once after a reply (Flower's `time.sleep(3)` "
              "has no knob) or fewer exchanges (four, as above)",
    "flower": "Flower's SecAgg+ (semi-honest) takes four exchanges, ours five (the "
              "consistency check a malicious server makes necessary), and both wait on the "
              "same 0.1 s scan (see round). Would lift it: three exchanges a round at most, "
              "which the malicious-server protocol does not allow",
    "mlp-64": "a DP step runs about twice a non-private step's tensor operations (per-"
              "example norms, clip factors, a noise draw and a fused product per "
              "parameter), and at batch 64 each costs its dispatch (~4 µs here) more than "
              "its arithmetic; the noise draw alone is ~50 µs of a ~400 µs step (see dpsgd "
              "and its profile). Would lift it: the step fused into a few kernels "
              "(torch.compile, which loads the 70 MB compiler a device should not, or a C++ "
              "extension)",
    "mlp-1024": "the per-example norms and the scaling of each layer's output gradients by "
                "the clip factors, which read every activation again after the backward "
                "pass (~30% over a non-private step at batch 1024; the ratio moves by "
                "±0.03 between runs around the goal; see dpsgd). Would lift it: one fused "
                "kernel for norms and scaling",
    "cnn-64": "its first convolution's per-example gradients are formed (64 positions of "
              "3x3 patches per image) and, at batch 64, the per-parameter operations' "
              "dispatch as for the MLP (see dpsgd and its profile). Would lift it: fusing, "
              "as for the MLP",
    "cnn-1024": "its first convolution's per-example gradients are formed (64 positions of "
                "3x3 patches per image), a cost that grows with the batch (see dpsgd and "
                "its profile). Would lift it: a fused per-example norm kernel for small "
                "convolutions, which forms no gradient",
    "edge": "the scipy that dp-accounting's PLD imports (~70 MB), which the device needs "
            "for its own budget check (see edge)",
    "base": "central evaluation and a checkpoint every round (see round)",
    "record": "per client and round, DP-SGD, the device ledger's PLD budget check and its "
              "signed, fsync'd appends (see round and the round-record-dp profile)",
    "user": "per client and round, the device ledger's fsync'd append and the fsync'd "
            "replay copy of its reply (crash safety), on rounds of ~0.15 s, where the "
            "machine's drift between two runs is of the same size (see round)",
}


def goals_table(results: dict[str, Any]) -> list[str]:
    """Issue 16's table: every privacy cost as a ratio, its goal and whether it is met."""
    rows: list[tuple[str, float, str, bool, str, str]] = []  # figure, value, goal, met, ...

    def add(figure: str, value: float | None, goal: float, at_most: bool, suite: str,
            limit: str, note: str = "", detail: str = "") -> None:
        if value is None:
            return
        met = value <= goal if at_most else value >= goal
        rows.append((figure, value, f"{'≤' if at_most else '≥'} {goal:g}", met,
                     f"{suite}, {results[suite]['meta']['date'][:16]}"
                     f"{' (quick)' if results[suite]['meta']['quick'] else ''}{note}",
                     _LIMITS[limit] + detail))

    if "round" in results:
        by = {r["variant"]: r for r in results["round"]["rows"]}
        full_work = by.get("fedpriv all (user-DP adaptive + secagg)", {}).get(
            "in_process_seconds_per_round")
        plain_round = by.get("plain Flower FedAvg", {}).get("seconds_per_round")
        work = (f". Without the engine (in-process), the full stack's round takes "
                f"{full_work:.3f} s of work, {full_work / plain_round:.2f}× plain Flower's "
                "round" if full_work and plain_round else "")
        for variant, figure, goal, limit in (
                ("fedpriv", "fedpriv without privacy / plain Flower, round", 1.1, "base"),
                ("fedpriv record-DP", "record-level DP / plain Flower, round", 1.5, "record"),
                ("fedpriv user-DP", "user-level DP / plain Flower, round", 1.2, "user"),
                ("fedpriv all (user-DP adaptive + secagg)",
                 "full stack (DP + secure aggregation) / plain Flower, round", 2.0, "full")):
            add(figure, by.get(variant, {}).get("ratio_to_plain"), goal, True, "round", limit,
                detail=work if limit == "full" else "")
        add("full stack / Flower's SecAgg+ with its DP wrapper, round",
            by.get("fedpriv all (user-DP adaptive + secagg)", {}).get(
                "ratio_to_flower_secagg_dp"), 0.5, True, "round", "flower")
    if "dpsgd" in results:
        for model in ("mlp", "cnn"):
            for r in results["dpsgd"]["rows"]:
                if (r["mode"], r["model"], r["device"]) == ("bookkeeping", model, "cpu"):
                    add(f"DP-SGD / non-private throughput, {model.upper()}, batch "
                        f"{r.get('batch', 64)}", r["ratio_to_non_private"], 0.7, False,
                        "dpsgd", f"{model}-{r.get('batch', 64)}")
    if "deploy" in results:
        for r in results["deploy"]["rows"]:
            if r["variant"].startswith("fedpriv"):
                add("deployed round, DP + secure aggregation / plain Flower deployed, "
                    "loopback", r.get("ratio_to_plain"), 1.5, True, "deploy", "deploy")
    if "edge" in results:
        for r in results["edge"]["rows"]:
            if r["client"] == "fedpriv" and r["config"] != "no privacy":
                add(f"edge client peak resident memory, {r['config']} / minimal Flower + "
                    "torch client", r["peak_ratio"], 1.2, True, "edge", "edge")
    if not rows:
        return []
    out = ["## goals (issue 16)", "",
           "| figure | measured | goal | met | suite, measured | what limits it |",
           "|---|---|---|---|---|---|"]
    out += [f"| {figure} | {value:.2f}× | {goal} | {'yes' if met else '**no**'} | {src} | "
            f"{'' if met else limit} |" for figure, value, goal, met, src, limit in rows]
    return [*out, ""]
