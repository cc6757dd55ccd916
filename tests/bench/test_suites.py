"""The benchmark suites run and report; no timing is asserted (timings belong in bench/)."""

import pytest

from bench.suites import accounting, dpsgd
from bench.suites.common import per_round
from bench.suites.report import render


def test_dpsgd_suite_reports_positive_ratios_for_every_mode():
    result = dpsgd.run(quick=True)
    modes = {(r["model"], r["mode"]) for r in result["rows"]}
    assert modes == {(m, k) for m in ("mlp", "cnn") for k in ("non-private", "hooks", "ghost")}
    assert all(r["examples_per_s"] > 0 and r["ratio_to_non_private"] > 0
               for r in result["rows"])
    assert all(r["ratio_to_non_private"] == 1.0 for r in result["rows"]
               if r["mode"] == "non-private")
    assert result["profile_cnn_hooks"]


def test_accounting_suite_orders_the_accountants():
    result = accounting.run(quick=True)
    for r in result["rows"]:
        assert 0 < r["pld"] <= r["rdp"]
        if r["prv"] is not None:
            assert r["prv_over_pld"] == pytest.approx(1.0, abs=0.05)
    meta = {"date": "d", "quick": True, "cpus": 2, "device": "cpu", "torch": "t",
            "opacus": "o", "flwr": "f"}
    text = render({"accounting": {"meta": meta, **result}})
    assert "RDP/PLD" in text and "fedpriv bench accounting --quick" in text


def test_per_round_excludes_the_first_round():
    assert per_round([10.0, 12.0, 14.0]) == 2.0
    with pytest.raises(ValueError, match="two rounds"):
        per_round([3.0])
