"""A real deployment on loopback: TLS, SuperNode authentication, DP and secure aggregation.

Every process is real (SuperLink, two SuperNodes and their ClientApps, ``flwr`` CLI) and
is stopped by PID (its whole process group) at the end.
"""

import json

import pytest

from bench.local_deploy import (
    BIN,
    Processes,
    deploy_env,
    free_port,
    run,
    wait_for_port,
    write_device_data,
    write_flwr_config,
)


@pytest.mark.slow
def test_tls_node_auth_dp_secagg_deployment(tmp_path):
    env = deploy_env(tmp_path)
    certs, logs = tmp_path / "certs", tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    fedpriv = BIN / "fedpriv"

    # Certificates: a CA, the SuperLink's TLS certificate, three node key pairs.
    out = run(env, fedpriv, "certs", "init", certs, "--host", "127.0.0.1",
              "--host", "localhost")
    assert out.returncode == 0, out.stderr
    assert oct((certs / "ca.key").stat().st_mode & 0o777) == "0o600"
    for name in ("edge-1", "edge-2", "rogue"):
        assert run(env, fedpriv, "certs", "node", name, "--dir", certs).returncode == 0
    again = run(env, fedpriv, "certs", "init", certs, "--host", "127.0.0.1")
    assert again.returncode == 2 and "--force" in again.stderr

    # The devices' own data (digits shares as .npz) and ledgers.
    write_device_data(tmp_path, 2)

    procs = Processes(env, logs)
    try:
        procs.start("superlink", fedpriv, "deploy", "superlink", "--certs", certs,
                    "--port", port, "--database", tmp_path / "state.db")
        wait_for_port(port)
        write_flwr_config(tmp_path / "flwr-home", port, ca=certs / "ca.pem")
        registering = {name: procs.start(f"register-{name}", BIN / "flwr", "supernode",
                                         "register", certs / "nodes" / f"{name}.pub")
                       for name in ("edge-1", "edge-2")}  # side by side: each is a CLI start
        for name, proc in registering.items():
            code, log = procs.wait_exit(f"register-{name}", proc)
            assert code == 0 and "registered" in log, log

        # Refused: an unregistered key; no CA (system roots); no TLS at all.
        refused = {
            "rogue": ["--root-certificates", certs / "ca.pem", "--auth-supernode-private-key",
                      certs / "nodes" / "rogue", "--auth-supernode-public-key",
                      certs / "nodes" / "rogue.pub"],
            "no-ca": ["--auth-supernode-private-key", certs / "nodes" / "edge-1",
                      "--auth-supernode-public-key", certs / "nodes" / "edge-1.pub"],
            "insecure": ["--insecure"],
        }
        # All three are tried beside the registered devices' start: none of them can
        # connect, so none can take part, and each costs a process start.
        refusing = {name: procs.start(f"refused-{name}", BIN / "flower-supernode",
                                      "--superlink", f"127.0.0.1:{port}", "--max-retries",
                                      "1", "--port", free_port(), *extra)
                    for name, extra in refused.items()}

        for i, name in enumerate(("edge-1", "edge-2"), start=1):
            procs.start(name, fedpriv, "deploy", "supernode", name, "--superlink",
                        f"127.0.0.1:{port}", "--certs", certs, "--data-dir",
                        tmp_path / f"data-{i}", "--ledger", tmp_path / f"{name}.sqlite",
                        "--max-epsilon", "50", "--port", free_port())

        for name, proc in refusing.items():
            code, log = procs.wait_exit(f"refused-{name}", proc)
            assert code != 0, name
            assert "Failed to initialize the connection to the SuperLink" in log, name
            if name == "no-ca":
                assert "SSL/TLS handshake error" in log

        run_dir = tmp_path / "run"
        # One round: each secure-aggregation round is five exchanges of Flower's polling
        # and process start (~40 s here); several rounds are the resume tests' business.
        config = (f'rounds=1 clients=2 local-epochs=1 dp-mode="record" secagg=true '
                  f'run-dir="{run_dir}"')
        flwr_run = run(env, BIN / "flwr", "run", ".", "fedpriv", "--stream", "--run-config",
                       config, timeout=500)
        assert flwr_run.returncode == 0, flwr_run.stdout + flwr_run.stderr
        listed = run(env, BIN / "flwr", "ls", "--format", "json")
        runs = json.loads(listed.stdout)["runs"]
        assert [r["status"] for r in runs] == ["finished:completed"], listed.stdout

        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds"] == 1 and summary["secagg"]["enabled"]
        assert summary["final_accuracy"] > summary["initial_accuracy"]
        assert summary["epsilon"]["federation"] > 0
        from fedpriv.privacy import PrivacyLedger

        for name in ("edge-1", "edge-2"):  # each device's own ledger, on the device
            with PrivacyLedger.open(tmp_path / f"{name}.sqlite") as led:
                assert led.verify().ok and [r for r, _ in led.events()] == [1]
                assert led.max_epsilon == 50.0
        audit = run(env, fedpriv, "audit", run_dir)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        procs.stop_all()
