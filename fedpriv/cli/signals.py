"""SIGINT/SIGTERM during a run: stop it, write its summary, stop its children, exit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedpriv.cli.common import EXIT_SIGINT, EXIT_SIGTERM, stderr

__all__ = ["descendants", "finish_interrupted", "stop_children", "stop_on_signals"]

#: Seconds the run gets to write its own summary after a signal before the CLI does.
_GRACE_SECONDS = 2.0


def stop_on_signals(run_dir: Any) -> None:
    """SIGINT/SIGTERM: stop the run, write its summary as interrupted, exit 130/143.

    The federation stops before its next round; if it has not written its summary within
    a short grace period (a round may be waiting on clients), the summary is written from
    here with what was recorded so far (every ledger entry and metrics line is already
    on disk), the simulation's child processes (Ray) are stopped by PID, and the process
    exits.
    """
    import signal
    import threading

    def handler(signum: int, _frame: Any) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        run_dir.exit_code = code
        run_dir.stop.set()
        name = signal.Signals(signum).name
        threading.Thread(target=finish_interrupted, args=(run_dir, code, name),
                         daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def finish_interrupted(run_dir: Any, code: int, name: str) -> None:
    """Give the run a grace period, else write its summary; stop children; exit."""
    import time

    stderr.print(f"\n{name}: stopping the run ...", highlight=False)
    summary_path = run_dir.path / "summary.json"
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline and not summary_path.exists():
        time.sleep(0.1)
    if not summary_path.exists() and run_dir.on_interrupt is not None:
        try:
            run_dir.on_interrupt(f"{name} received")
        except Exception as exc:  # still exit: the ledgers and metrics are on disk
            stderr.print(f"could not write the summary: {type(exc).__name__}: {exc}")
    stderr.print(f"interrupted: run directory {run_dir.path} (status 'interrupted' in "
               f"summary.json; `fedpriv audit {run_dir.path}` reports it as unfinished). "
               f"Continue it with `fedpriv simulate --resume {run_dir.path}`.",
               highlight=False, soft_wrap=True)
    stop_children()
    os._exit(code)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_children() -> None:
    """SIGTERM, then SIGKILL, every descendant of this process (by PID, never by name)."""
    import signal
    import time

    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM and pids:
            time.sleep(1.0)
