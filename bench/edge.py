"""Edge-client profile: one ClientApp round on a device's own .npz data, CPU only.

Runs in a fresh process what a SuperNode's ClientApp runs for one round of the digits
task (MLP, DP-SGD at record level, the update quantised and masked for secure
aggregation) and reports its peak resident memory, its time per round and the bytes it
uploads. Usage: ``python -m bench.edge [--examples N]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Profile one round and print the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=719, help="examples on the device")
    args = p.parse_args(argv)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

    from client.app import app as client_app
    from fedpriv.config import RunConfig
    from fedpriv.messages import ARRAYS, CONFIG, SERVER_ROUND
    from fedpriv.secagg import enrol, layout_for, run_round
    from fedpriv.tasks import build_task_model, load_digits, load_task_data
    from tests.support.grid import instruction

    torch.set_num_threads(1)  # a small board: one core for training
    rss_imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        train = load_digits(test_fraction=0.2, seed=0).train
        idx = np.random.default_rng(0).permutation(len(train))[: args.examples]
        np.savez(Path(tmp) / "part.npz", x=train.x[idx], y=train.y[idx])
        cfg = RunConfig.from_mapping({"local-epochs": 1, "dp-mode": "record",
                                      "device": "cpu"}).resolved()
        model = build_task_model(cfg, load_task_data(cfg))
        msg = instruction(RecordDict({ARRAYS: ArrayRecord(model.state_dict()),
                                      CONFIG: ConfigRecord({**cfg.to_flat(), SERVER_ROUND: 1})}),
                          dst_node_id=1, message_type="train")
        ctx = Context(run_id=1, node_id=1, state=RecordDict(), run_config={},
                      node_config={"data-dir": tmp,
                                   "ledger-path": str(Path(tmp) / "ledger.sqlite")})
        t0 = time.perf_counter()
        reply = client_app(msg, ctx)
        train_s = time.perf_counter() - t0
        plain_bytes = sum(a.numpy().nbytes for a in reply.content[ARRAYS].values())
        d = sum(int(np.prod(a.shape)) for a in model.state_dict().values())
        layout = layout_for(cfg.secagg)
        # Secure-aggregation upload for a cohort of 10 (k, t derived as the clients do).
        x = {u: np.zeros(layout.length(d), np.uint64) for u in range(1, 11)}
        enrolment = enrol(list(x))
        t0 = time.perf_counter()
        _, transcript = run_round(x, enrolment=enrolment, modulus_bits=layout.modulus_bits(10))
        secagg_s = (time.perf_counter() - t0) / 10
        upload = _client_bytes(transcript, 1)
    out = {
        "examples": args.examples, "parameters": d,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_imported / 1024, "rss_at_start_mb": rss_start / 1024,
        "train_round_seconds": train_s, "secagg_client_seconds_per_round": secagg_s,
        "upload_bytes_plain_float32": plain_bytes, "upload_bytes_secagg": upload,
    }
    print(json.dumps(out, indent=2))
    return 0


def _client_bytes(transcript: object, node: int) -> int:
    from fedpriv.secagg.messages import wire_size

    return sum(wire_size(m) for m in transcript.received  # type: ignore[attr-defined]
               if getattr(m, "sender", None) == node)


if __name__ == "__main__":
    raise SystemExit(main())
