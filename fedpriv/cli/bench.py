"""``fedpriv bench``: privacy's costs, side by side with the peers, in one run."""

from __future__ import annotations

from typing import Annotated

import typer

from fedpriv.cli.common import fail, stdout

__all__ = ["bench"]


def bench(
    names: Annotated[list[str] | None, typer.Argument(
        help="Suites: dpsgd, accounting, secagg, round, deploy, utility, lm, edge, "
        "movielens, scale (default: all).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small settings (minutes).")] = False,
) -> None:
    """Run the benchmark suites side by side; write bench/results/*.json and README.md.

    Prints the report, which opens with every privacy cost as a ratio beside its goal.

    Needs the repository checkout (the suites live in bench/, beside the package).
    """
    try:
        from bench.suites.runner import SUITES, run_suites
    except ImportError:
        raise fail("the benchmark suites live in the repository's bench/ directory: run "
                    "`fedpriv bench` from a checkout") from None
    unknown = sorted(set(names or []) - set(SUITES))
    if unknown:
        raise fail(f"NAMES: must be among {{{', '.join(SUITES)}}}, got {', '.join(unknown)}")
    run_suites(list(names or []), quick)
    from bench.suites.common import RESULTS

    stdout.print((RESULTS / "README.md").read_text(), markup=False, highlight=False)
