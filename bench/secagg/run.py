"""Secure aggregation cost, side by side in one run: fedpriv SecAgg+ vs plaintext vs Flower.

For n clients and d coordinates it measures, on the same inputs and the same k and t:

- fedpriv: a client's masking time (stage 3: authenticate k share bundles, k X25519+HKDF
  agreements, self mask + k pairwise AES-128-CTR masks accumulated chunk by chunk), the
  server's unmasking time (Shamir reconstruction of every survivor's b, then removal of
  the masks in one chunked pass), and the bytes each client sends (sum of
  :func:`fedpriv.secagg.wire_size` of its messages over the five stages);
- plaintext: a numpy sum of the same n uint64 vectors, and the bytes of one b-bit vector
  packed as the masked one travels (ceil(b/8) d);
- Flower 1.41's SecAgg+ building blocks (flwr.common.secure_aggregation): the same client
  masking with ``generate_shared_key`` (ECDH P-384 + HKDF), Fernet ``decrypt`` of the
  k shares and ``pseudo_rand_gen`` (numpy RandomState seeded with 32 bits of each
  secret) for self + pairwise masks; the same server unmasking with ``combine_shares``
  (t shares per survivor) and ``pseudo_rand_gen`` per self mask.

Usage: ``python -m bench.secagg.run [--quick]``; writes bench/results/secagg.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedpriv.secagg import SecurityParams, ServerSecAgg, enrol, wire_size, word_bytes
from fedpriv.secagg.shamir import _weights_at_zero

RESULTS = Path(__file__).resolve().parents[1] / "results"
BITS = 40
MAX_TIMED_CLIENTS = 10  # client masking is timed on this many clients (median)
REPEATS = 3  # server unmask and plain sum: median of this many interleaved runs


def _run_ours(n: int, d: int, rng: np.random.Generator, prg: str) -> dict[str, float]:
    ids = list(range(1, n + 1))
    en = enrol(ids, params=SecurityParams(prg=prg))
    server = ServerSecAgg(round_id=1, params=en.params, modulus_bits=BITS, length=d,
                          population=n, threads=2)
    clients = {u: en.client(u, round_id=1, modulus_bits=BITS, max_cohort=n) for u in ids}
    sent = dict.fromkeys(ids, 0)
    recv = dict.fromkeys(ids, 0)

    def up(msg):
        sent[msg.sender] += wire_size(msg, bits=BITS)
        server.receive(msg)

    def down(msg):
        recv[msg.recipient] += wire_size(msg)
        return msg

    for c in clients.values():
        up(c.advertise_keys())
    keys = {u: down(server.neighbour_keys(u)) for u in ids}
    for u, c in clients.items():
        up(c.share_keys(keys[u]))
    routed = {u: down(server.routed_shares(u)) for u in ids}
    xs = {u: rng.integers(0, 1 << 20, d, dtype=np.uint64) for u in ids}
    mask_times = []
    for i, (u, c) in enumerate(clients.items()):
        t0 = time.perf_counter()
        msg = c.mask_input(routed[u], xs[u])
        if i < MAX_TIMED_CLIENTS:
            mask_times.append(time.perf_counter() - t0)
        up(msg)
    reqs = {u: down(server.consistency_request(u)) for u in ids}
    for u, c in clients.items():
        up(c.sign_survivors(reqs[u]))
    reqs2 = {u: down(server.unmask_request_for(u)) for u in ids}
    for u, c in clients.items():
        up(c.reveal_shares(reqs2[u]))
    unmask_runs, plain_runs = [], []
    for _ in range(REPEATS):  # interleaved, median of each: the machine is shared
        _weights_at_zero.cache_clear()  # no warm Lagrange weights from the last repeat
        t0 = time.perf_counter()
        total, _ = server.finish()
        unmask_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain = np.zeros(d, np.uint64)
        for y in server.masked.values():  # the same vectors, summed as plain numpy
            plain += y
        plain_runs.append(time.perf_counter() - t0)
    unmask, plain_s = float(np.median(unmask_runs)), float(np.median(plain_runs))
    want = sum(xs.values()) & np.uint64((1 << BITS) - 1)
    if not np.array_equal(total, want):
        raise RuntimeError("fedpriv SecAgg+ sum differs from the plaintext sum")
    setup = server.setup
    return {"client_mask_s": float(np.median(mask_times)), "server_unmask_s": unmask,
            "bytes_sent_per_client": float(np.mean(list(sent.values()))),
            "bytes_recv_per_client": float(np.mean(list(recv.values()))),
            "plain_server_sum_s": plain_s,
            "plain_bytes_per_client": float(word_bytes(BITS) * d),
            "k": min(len(v) for v in setup.neighbours.values()), "t": setup.threshold}


def _run_flower(n: int, d: int, k: int, t: int, rng: np.random.Generator,
                timed_survivors: int) -> dict[str, float]:
    from cryptography.fernet import Fernet
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import generate_key_pairs

    mod = 1 << BITS
    x = rng.integers(0, 1 << 20, d, dtype=np.int64)
    me_sk, _ = generate_key_pairs()
    peers = [generate_key_pairs()[1] for _ in range(k)]
    fkeys = [Fernet.generate_key() for _ in range(k)]
    cts = [Fernet(fk).encrypt(os.urandom(136)) for fk in fkeys]
    b_seed = os.urandom(32)
    t0 = time.perf_counter()
    for fk, ct in zip(fkeys, cts, strict=True):  # authenticate/decrypt the k shares
        decrypt(fk, ct)
    y = x + pseudo_rand_gen(b_seed, mod, [(d,)])[0]
    for i, pk in enumerate(peers):
        seed = generate_shared_key(me_sk, pk)
        m = pseudo_rand_gen(seed[:32], mod, [(d,)])[0]
        y = y + m if i % 2 else y - m
    y %= mod
    client = time.perf_counter() - t0
    # Server: combine t shares of each survivor's b and regenerate its self mask.
    # Timed on ``timed_survivors`` survivors and scaled to n (stated in the output).
    shares = [create_shares(os.urandom(32), t, k)[:t] for _ in range(timed_survivors)]
    t0 = time.perf_counter()
    total = np.zeros(d, np.int64)
    for _ in range(n):
        total += y
    sum_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for sh in shares:
        seed = combine_shares(sh)
        total -= pseudo_rand_gen(seed, mod, [(d,)])[0]
    total %= mod
    per = (time.perf_counter() - t0) / timed_survivors
    return {"client_mask_s": client, "server_unmask_s": sum_s + per * n,
            "server_extrapolated": timed_survivors < n}


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n in {10, 20}, d in {1e3, 1e4}")
    p.add_argument("--prg", default="aes128-ctr", choices=["aes128-ctr", "chacha20"],
                   help="mask keystream")
    args = p.parse_args(argv)
    ns = [10, 20] if args.quick else [10, 50, 100]
    ds = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(0)
    rows = []
    t_start = time.perf_counter()
    for n in ns:
        for d in ds:
            ours = _run_ours(n, d, rng, args.prg)
            timed = n if n * d <= 10_000_000 else 20
            fl = _run_flower(n, d, int(ours["k"]), int(ours["t"]), rng, timed)
            row = {"n": n, "d": d, **{f"ours_{k}": v for k, v in ours.items()
                                      if not k.startswith("plain")},
                   "plain_server_sum_s": ours["plain_server_sum_s"],
                   "plain_bytes_per_client": ours["plain_bytes_per_client"],
                   "flower_client_mask_s": fl["client_mask_s"],
                   "flower_server_unmask_s": fl["server_unmask_s"],
                   "flower_server_extrapolated": fl["server_extrapolated"]}
            row["k"], row["t"] = row.pop("ours_k"), row.pop("ours_t")
            row["server_vs_plain"] = row["ours_server_unmask_s"] / max(
                row["plain_server_sum_s"], 1e-9)
            row["bytes_vs_plain"] = (row["ours_bytes_sent_per_client"]
                                     / row["plain_bytes_per_client"])
            row["client_vs_flower"] = (row["ours_client_mask_s"]
                                       / row["flower_client_mask_s"])
            row["server_vs_flower"] = (row["ours_server_unmask_s"]
                                       / row["flower_server_unmask_s"])
            rows.append(row)
            print(f"n={n:>3} d={d:>8} k={row['k']:>2} t={row['t']:>2}  client "
                  f"{row['ours_client_mask_s']:.4f}s (flower "
                  f"{row['flower_client_mask_s']:.4f}s)"
                  f"  server {row['ours_server_unmask_s']:.3f}s (plain "
                  f"{row['plain_server_sum_s']:.4f}s, flower "
                  f"{row['flower_server_unmask_s']:.3f}s"
                  f"{' extrapolated' if fl['server_extrapolated'] else ''})  bytes/client "
                  f"{row['ours_bytes_sent_per_client']:,.0f}", flush=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "numpy": np.__version__,
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform(), "quick": args.quick, "modulus_bits": BITS,
            "prg": args.prg,
            "wall_s": round(time.perf_counter() - t_start, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "secagg-quick" if args.quick else "secagg"
    payload = json.dumps({"meta": meta, "rows": rows}, indent=2)
    (RESULTS / f"{name}.json").write_text(payload)
    lines = [
        f"# Secure aggregation cost ({meta['date']}, {meta['cpus']} CPUs, "
        f"{meta['machine']}, Python {meta['python']}, numpy {meta['numpy']})", "",
        f"One round, no dropouts, b = 40, {meta['prg']} masks, malicious-server protocol "
        "(signed keys, ConsistencyCheck), k and t derived for gamma = 0.1. *client* = one "
        f"client's stage-3 masking (median of {MAX_TIMED_CLIENTS}); *server* = "
        "unmasking (Shamir reconstruction + mask removal, accumulated chunk by chunk); "
        "*plain* = a plaintext numpy sum of the same n uint64 vectors (server and plain: "
        f"median of {REPEATS} interleaved runs); *bytes* = what one "
        "client sends over the five stages, the masked vector in 5 bytes a coordinate (plain: "
        "5d, the same vector unmasked). Flower = 1.41's SecAgg+ "
        "building blocks on the same k, t (ECDH P-384, Fernet, `pseudo_rand_gen` on a "
        "32-bit RandomState seed, `combine_shares`). Flower server times marked * were "
        "timed on 20 survivors and scaled to n. Times in seconds.", "",
        "| n | d | k | t | client ours | client Flower | ours/Flower | server ours | "
        "plain sum | ours/plain | server Flower | ours/Flower | bytes/client | "
        "ours/plain |", "|" + "---|" * 14]
    for r in rows:
        star = "*" if r["flower_server_extrapolated"] else ""
        lines.append(
            f"| {r['n']} | {r['d']:,} | {r['k']} | {r['t']} | "
            f"{r['ours_client_mask_s']:.4f} | {r['flower_client_mask_s']:.4f} | "
            f"{r['client_vs_flower']:.2f} | {r['ours_server_unmask_s']:.3f} | "
            f"{r['plain_server_sum_s']:.4f} | {r['server_vs_plain']:.2f} | "
            f"{r['flower_server_unmask_s']:.3f}{star} | {r['server_vs_flower']:.2f} | "
            f"{r['ours_bytes_sent_per_client']:,.0f} | {r['bytes_vs_plain']:.2f} |")
    lines += ["", f"Total bench wall time: {meta['wall_s']} s."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
