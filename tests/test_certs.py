import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    load_ssh_private_key,
    load_ssh_public_key,
)
from typer.testing import CliRunner

from fedpriv.certs import CertError, init_certs, node_key
from fedpriv.cli import app


def test_ca_and_superlink_certificate_with_sans(tmp_path):
    paths = init_certs(tmp_path, ["127.0.0.1", "fl.example.org"])
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_nothing_is_overwritten_without_force(tmp_path):
    paths = init_certs(tmp_path, ["localhost"])
    before = paths.ca_key.read_bytes()
    with pytest.raises(CertError, match="--force"):
        init_certs(tmp_path, ["localhost"])
    assert paths.ca_key.read_bytes() == before
    init_certs(tmp_path, ["localhost"], force=True)
    assert paths.ca_key.read_bytes() != before


def test_node_keys_are_what_flower_reads(tmp_path):
    private, public = node_key(tmp_path, "edge-1")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_ssh_private_key(private.read_bytes(), password=None)
    assert key.curve.name == "secp384r1"
    assert load_ssh_public_key(public.read_bytes()) == key.public_key()
    with pytest.raises(CertError, match="exists"):
        node_key(tmp_path, "edge-1")


@pytest.mark.parametrize(("hosts", "fragment"), [([], "--host is required"),
                                                 (["bad host"], "--host must be")])
def test_bad_hosts(tmp_path, hosts, fragment):
    with pytest.raises(CertError, match=fragment):
        init_certs(tmp_path, hosts)


def test_bad_node_name(tmp_path):
    with pytest.raises(CertError, match="node name"):
        node_key(tmp_path, "../escape")


def test_deploy_wrappers_are_secure_by_default(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["deploy", "superlink", "--certs", str(tmp_path)])
    assert missing.exit_code == 2 and "certs init" in missing.output
    init_certs(tmp_path, ["127.0.0.1"])
    node_key(tmp_path, "edge-1")
    link = runner.invoke(app, ["deploy", "superlink", "--certs", str(tmp_path), "--dry-run"])
    assert link.exit_code == 0
    assert "--enable-supernode-auth" in link.output and "--insecure" not in link.output
    assert "--disable-runtime-dependency-installation" in link.output
    data = tmp_path / "data"
    data.mkdir()
    node = runner.invoke(app, ["deploy", "supernode", "edge-1", "--superlink", "127.0.0.1:9093",
                               "--certs", str(tmp_path), "--data-dir", str(data), "--ledger",
                               str(tmp_path / "l.sqlite"), "--max-epsilon", "4", "--dry-run"])
    assert node.exit_code == 0, node.output
    assert "client-max-epsilon=4.0" in node.output and "--root-certificates" in node.output
    assert "OMP_NUM_THREADS" not in node.output  # torch's default unless asked
    args = ["deploy", "supernode", "edge-1", "--superlink", "127.0.0.1:9093", "--certs",
            str(tmp_path), "--data-dir", str(data), "--ledger", str(tmp_path / "l.sqlite")]
    one = runner.invoke(app, [*args, "--threads", "1", "--dry-run"])
    assert one.exit_code == 0 and one.output.startswith("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ")
    bad = runner.invoke(app, [*args, "--threads", "-1", "--dry-run"])
    assert bad.exit_code == 2 and "--threads must be >= 0" in bad.output and "-1" in bad.output
    lab = runner.invoke(app, ["deploy", "superlink", "--insecure", "--dry-run"])
    assert lab.exit_code == 0 and "WARNING" in lab.output and "--insecure" in lab.output


def test_node_identity_beside_the_node_key_and_in_the_roster(tmp_path):
    from fedpriv.certs import load_identity, load_roster, node_secagg_config

    node_key(tmp_path, "edge-1")
    node_key(tmp_path, "edge-2")
    cfg = node_secagg_config(tmp_path, "edge-2")
    assert cfg["secagg-id"] == 1
    ident = tmp_path / "nodes" / "edge-2.ed25519"
    assert cfg["secagg-identity"] == str(ident.resolve())
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    roster = load_roster(cfg["secagg-roster"])
    assert roster.keys[1] == load_identity(ident).public and set(roster.keys) == {0, 1}
    node_key(tmp_path, "edge-1", force=True)  # a new key keeps the node's id
    assert node_secagg_config(tmp_path, "edge-1")["secagg-id"] == 0
    assert len(load_roster(tmp_path / "roster.json")) == 2
    with pytest.raises(CertError, match="no secagg identity"):
        node_secagg_config(tmp_path, "edge-3")


def test_simulation_identities_are_made_once_and_kept(tmp_path):
    from fedpriv.certs import ensure_identities

    first = ensure_identities(tmp_path, [0, 1, 2])
    again = ensure_identities(tmp_path, [0, 1, 2, 3])
    assert all(again.keys[u] == first.keys[u] for u in range(3)) and 3 in again
    assert stat.S_IMODE((tmp_path / "0.ed25519").stat().st_mode) == 0o600
