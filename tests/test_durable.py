"""Atomic, durable file replacement: the data, then the rename, reach the disk."""

import os
import stat

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedpriv import durable


@pytest.fixture
def synced(monkeypatch):
    """Each fsync, in order, as 'dir' or 'file' (what the descriptor was)."""
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    return calls


@pytest.mark.skipif(os.name != "posix", reason="directories are synced on POSIX only")
def test_the_file_then_its_directory_are_synced_and_nothing_is_left_behind(tmp_path, synced):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    durable.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert synced == ["file", "dir"]  # the data first, then the rename's directory entry
    synced.clear()
    durable.write_tensors(tmp_path / "m.safetensors", {"w": np.arange(3.0)}, {"round": "2"})
    assert synced == ["file", "dir"]
    np.testing.assert_array_equal(load_file(tmp_path / "m.safetensors")["w"], np.arange(3.0))
    synced.clear()
    (tmp_path / "pending").write_bytes(b"p")
    durable.replace(tmp_path / "pending", tmp_path / "committed")
    assert synced == ["dir"] and (tmp_path / "committed").read_bytes() == b"p"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "committed", "m.safetensors", "state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(durable.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        durable.write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_clients_replay_copy_and_the_servers_checkpoint_use_it(tmp_path, synced):
    from client.replay import Payload, ReplayCache
    from server.rundir import RunDirectory

    cache = ReplayCache(tmp_path / "ledger.sqlite", "scope")
    cache.save(run_id="r", server_round=1, model="m",
               payload=Payload(kind="update", arrays={"w": np.ones(2)}, info={}))
    assert synced[-1] == "dir"
    synced.clear()
    run = RunDirectory(tmp_path / "run").create()
    run.save_pending(1, {"w": np.ones(2)}, {}, {})
    run.commit_checkpoint(1, {"test_accuracy": 0.5})
    assert synced.count("dir") >= 3  # pending written, moved into place, checkpoint written


def test_the_private_state_directory_is_absolute_and_the_same_for_every_process(
        tmp_path, monkeypatch):
    from fedpriv.durable import private_dir

    monkeypatch.setenv("FEDPRIV_STATE_DIR", str(tmp_path / "state"))
    one = private_dir(tmp_path / "run", "replay")
    monkeypatch.chdir(tmp_path)
    assert private_dir("run", "replay") == one  # a relative run dir resolves the same
    assert one.parent == tmp_path / "state" / "replay"
    assert private_dir(tmp_path / "other", "replay") != one
    monkeypatch.setenv("FEDPRIV_STATE_DIR", "relative/state")
    with pytest.raises(ValueError, match="absolute"):
        private_dir(tmp_path / "run", "replay")
