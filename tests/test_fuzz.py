"""Malformed messages never crash a handler process or corrupt a ledger (hypothesis).

The ClientApp gets random message types and random records (configs with wrong keys,
types and ranges; arrays of wrong shapes and dtypes; secure-aggregation payloads of
junk). It may refuse (raise an ``Exception``, which Flower turns into an error reply),
never anything else, and the client's ledger still verifies. The server's aggregation
gets random replies; it may drop them but never raises and never makes a non-finite
model. ``FEDPRIV_FUZZ_EXAMPLES`` raises the number of examples (10,000 per handler was
run by hand; CI runs fewer).
"""

from __future__ import annotations

import os
import string

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.loopback import instruction
from client.app import app as client_app
from fedpriv.config import RunConfig
from fedpriv.messages import ARRAYS, CONFIG, METRICS, PRIVACY, SECAGG, SERVER_ROUND, UPDATE
from fedpriv.privacy import PrivacyLedger

EXAMPLES = int(os.environ.get("FEDPRIV_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

BASE = RunConfig.from_mapping({"clients": 4, "local-epochs": 1, "rounds": 2,
                               "partition": "iid", "dp-mode": "record"}).to_flat()
TYPES = ["train", "evaluate", "train.secagg_advertise", "train.secagg_share",
         "train.secagg_consistency", "train.secagg_unmask", "query"]
scalars = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12), st.booleans())


@st.composite
def configs(draw):
    cfg = dict(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(cfg)), max_size=4, unique=True)):
        if draw(st.booleans()):
            del cfg[key]
        else:
            cfg[key] = draw(scalars)
    for key in draw(st.lists(st.text(string.ascii_lowercase + "-", min_size=1,
                                     max_size=10), max_size=2)):
        cfg[key] = draw(scalars)
    cfg[SERVER_ROUND] = draw(st.integers(-3, 5))
    return cfg


@st.composite
def arrays(draw):
    out = {}
    for i in range(draw(st.integers(0, 3))):
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.uint8]))
        if np.issubdtype(dtype, np.floating):
            value = draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
        else:
            value = draw(st.integers(0, 255))
        name = draw(st.sampled_from(["0.weight", "0.bias", "x", f"k{i}"]))
        out[name] = np.full(shape, value, dtype=dtype)
    return out


@st.composite
def client_messages(draw):
    content = RecordDict()
    if draw(st.integers(0, 9)) > 0:
        content[CONFIG] = ConfigRecord({k: v for k, v in draw(configs()).items()
                                        if not isinstance(v, float) or np.isfinite(v)})
    if draw(st.booleans()):
        content[ARRAYS] = ArrayRecord({k: Array(v) for k, v in draw(arrays()).items()})
    if draw(st.booleans()):
        content[SECAGG] = ConfigRecord({k: draw(st.one_of(
            st.integers(-5, 2**20), st.binary(max_size=40), st.lists(st.integers(0, 9),
                                                                     max_size=4)))
            for k in draw(st.lists(st.sampled_from(
                ["round-id", "run-id", "nodes", "peers", "cts", "from", "survivors",
                 "dropped", "sigs", "x"]), max_size=4))})
    return draw(st.sampled_from(TYPES)), content


@FUZZ
@given(data=client_messages(), partition=st.integers(0, 3))
def test_client_handlers_refuse_junk_without_crashing(tmp_path_factory, data, partition):
    message_type, content = data
    run_dir = tmp_path_factory.getbasetemp() / "fuzz-client"
    if CONFIG in content.config_records:
        content[CONFIG] = ConfigRecord({**dict(content[CONFIG]), "run-dir": str(run_dir)})
    msg = instruction(content, dst_node_id=3, message_type=message_type)
    ctx = Context(run_id=7, node_id=3, node_config={"partition-id": partition,
                                                   "num-partitions": 4},
                  state=RecordDict(), run_config={})
    try:
        reply = client_app(msg, ctx)
    except Exception:  # a refusal: Flower turns it into an error reply
        reply = None
    if reply is not None:
        assert isinstance(reply, Message)
    for path in run_dir.glob("clients/*/ledger.sqlite"):
        with PrivacyLedger.open(path) as led:
            assert led.verify().ok


def _reply(records: RecordDict) -> Message:
    from strategies.updates import synthetic_reply

    return synthetic_reply(None, records)


@st.composite
def server_replies(draw):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        records = RecordDict()
        if draw(st.booleans()):
            records[draw(st.sampled_from([UPDATE, ARRAYS]))] = ArrayRecord(
                {k: Array(v) for k, v in draw(arrays()).items()})
        if draw(st.booleans()):
            records[METRICS] = MetricRecord({k: float(draw(st.floats(
                allow_nan=False, allow_infinity=False, width=32)))
                for k in draw(st.lists(st.sampled_from(
                    ["update-weight", "unclipped", "num-examples", "x"]), max_size=3))})
        if draw(st.booleans()):
            records[PRIVACY] = ConfigRecord({"client-id": draw(st.text(max_size=5)),
                                             "refused": draw(st.booleans())})
        out.append(_reply(records))
    return out


@FUZZ
@given(replies=server_replies(), mode=st.sampled_from(["none", "user"]))
def test_server_aggregation_drops_junk_and_keeps_a_finite_model(replies, mode):
    from fedpriv.privacy import SeededGaussian
    from strategies.dp_fedavg import DpFedAvg
    from strategies.factory import build_strategy
    from strategies.update_mean import UpdateMean
    from tests.support.strategy import around

    cfg = RunConfig.from_mapping({"clients": 4, "dp-mode": mode})
    inner = build_strategy(cfg)
    wrapped = (DpFedAvg(inner, noise_multiplier=1.0, clip=1.0, expected_cohort=4.0,
                        noise=SeededGaussian(np.random.default_rng(0)))
               if mode == "user" else UpdateMean(inner))
    strategy, current = around(wrapped)
    arrays_out, _ = strategy.aggregate_train(1, replies)
    if arrays_out is not None:
        assert set(arrays_out.keys()) == set(current.keys())
        for key, array in arrays_out.items():
            assert array.numpy().shape == current[key].numpy().shape
            assert np.isfinite(array.numpy()).all()
