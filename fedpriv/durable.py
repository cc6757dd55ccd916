"""Files that survive a crash whole and in place: temporary name, fsync, rename, fsync dir.

A file written under a temporary name, fsync'd and renamed over its target is never seen
half-written; but the rename itself is an entry in the directory, and POSIX makes it
durable only once the directory is synced too (fsync(2): syncing a file "does not
necessarily ensure that the entry in the directory containing the file has also reached
disk. For that an explicit fsync() on a file descriptor for the directory is also
needed"). Without it, a power cut just after the rename can bring back the old file, or
no file, on a journalling file system that reorders metadata. fedpriv's crash-safety
claims rest on these renames: a client's copy of the reply it released (so a retry gets
the same noisy update) and the server's checkpoint around each ledger commit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["private_dir", "replace", "sync_directory", "write_bytes", "write_tensors"]


def sync_directory(path: str | os.PathLike[str]) -> None:
    """Fsync the directory ``path`` (its entries: creations, renames); POSIX only."""
    if os.name != "posix":  # Windows cannot open a directory; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace(src, dst)``, then sync ``dst``'s directory so the rename persists."""
    os.replace(src, dst)
    sync_directory(Path(dst).parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tensors(path: Path, arrays: Mapping[str, np.ndarray],
                  metadata: dict[str, str]) -> None:
    """Write a safetensors file of ``arrays`` to ``path`` atomically and durably."""
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_dir(run_dir: str | os.PathLike[str], kind: str) -> Path:
    """A directory for ``kind`` of one run's state that must stay *out* of the run directory.

    The run directory is what an operator keeps, copies and hands to an auditor; what a
    simulated client released before the server's noise or masking (its replay copy,
    :mod:`client.replay`) is as sensitive as what the server sees and must not be in it.
    ``$FEDPRIV_STATE_DIR`` (default ``$XDG_STATE_HOME/fedpriv``, else
    ``~/.local/state/fedpriv``) ``/<kind>/<first 16 hex of SHA-256 of the run
    directory's absolute path>``: the same for every process of the run and for a
    resumed run, another for every other run directory. Not created here.
    """
    root = os.environ.get("FEDPRIV_STATE_DIR") or str(
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "fedpriv")
    if not Path(root).expanduser().is_absolute():
        # every process of a run must find the same directory, whatever its working one
        raise ValueError(f"FEDPRIV_STATE_DIR must be an absolute path, got {root!r}")
    key = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return Path(root).expanduser() / kind / key
