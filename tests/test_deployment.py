"""The secure Deployment Engine setup of the README, end to end on loopback.

A real SuperLink (not a simulation) with TLS and SuperNode authentication, three SuperNodes as
separate processes with registered keys, `flwr run` to it from its own FLWR_HOME: one MPSL epoch
of the embedded task. In the same federation, a SuperNode whose key was never registered and one
that connects without TLS are refused. Every process is stopped by PID (`flwr_harness`).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from support.flwr_harness import flwr_run, free_port, secure_federation

from mpsl_flower.config import parse_run_config
from mpsl_flower.node.device_partition import PARTITIONS_DIR
from mpsl_flower.node.partitions import client_partition
from mpsl_flower.runs.folder import RESUME_CONFIG_FILE, RESUME_STATE_FILE
from mpsl_flower.runs.readers import read_metrics
from mpsl_flower.tools.deployment import instructions, main, write_deployment

DEVICES = 3
# One step: 2,200 samples per client and step, more than any client's near-equal third of the 6,000 under the
# iid split (each message is a fresh ClientApp process)
RUN_CONFIG = "nr-of-epochs=1 batch-size=6600 dataset-split-type='iid'"
REFUSED_WITHIN_S = 90
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_helper_writes_a_ca_a_superlink_certificate_and_one_key_pair_per_device(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--address", "10.0.0.5", "--address", "server.lan", "--devices", "2"]) == 0
    printed = capsys.readouterr().out
    certificate = x509.load_pem_x509_certificate((tmp_path / "superlink.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # loopback too: the SuperLink's own SuperExec reaches it there to start the ServerApp
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["server.lan", "localhost"]
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))  # the CA loads as a trust root
    assert context.cert_store_stats()["x509_ca"] == 1
    for device in range(2):
        assert (tmp_path / f"device-{device}" / "supernode.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
        assert (tmp_path / f"device-{device}" / "supernode").stat().st_mode & 0o077 == 0  # private keys: owner only
    assert "--enable-supernode-auth" in printed and "--port 9093" in printed
    assert f"flwr supernode register {tmp_path}/device-1/supernode.pub mpsl" in printed
    assert "--node-config 'partition-id=1 num-partitions=2'" in printed and "flwr run . mpsl --stream" in printed
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "none"), "--address", "10.0.0.5", "--devices", "0"])


@pytest.mark.integration
def test_mpsl_runs_over_tls_with_authenticated_supernodes_and_strangers_are_refused(tmp_path):
    stranger_key = write_deployment(tmp_path / "stranger", ["127.0.0.1"], 1).device_key(0)  # valid, never registered
    with secure_federation(tmp_path, DEVICES) as federation:
        deployment = federation.deployment
        unregistered = deployment.supernode_command(0, runtime_port=free_port())
        unregistered[unregistered.index("--auth-supernode-private-key") + 1] = str(stranger_key)
        without_tls = [
            "flower-supernode",
            "--insecure",
            "--superlink",
            deployment.superlink,
            "--port",
            str(free_port()),
        ]
        without_tls += ["--node-config", f"partition-id=0 num-partitions={DEVICES}"]
        retries = ["--max-retries", "2", "--max-wait-time", "30"]
        strangers = {
            "unregistered": federation.start(unregistered + retries, "unregistered"),
            "without-tls": federation.start(without_tls + retries, "without-tls"),
        }
        for name, process in strangers.items():
            try:
                code = process.wait(REFUSED_WITHIN_S)
            except subprocess.TimeoutExpired:
                code = None
            assert code not in (0, None), f"{name} SuperNode was not refused:\n{federation.log(name)}"
        assert "Failed to activate SuperNode" in federation.log("unregistered")
        assert "could not establish a connection to the SuperLink" in federation.log("without-tls")

        output_dir = tmp_path / "results"
        run_config = (
            f"{RUN_CONFIG} output-dir='{output_dir}' client-state-dir='{tmp_path / 'client-state'}' "
            f"pre-processors-cache-dir='{tmp_path / 'cache'}'"
        )
        run = flwr_run(federation.env, federation.superlink_log, run_config, num_supernodes=None)

    (folder,) = output_dir.iterdir()
    info = json.loads((folder / "run_info.json").read_text())
    assert info["num_clients"] == DEVICES and sorted(map(int, info["partition_sizes"])) == [0, 1, 2], run.diagnostics
    (record,) = read_metrics(folder)
    assert record["clients_aggregated"] == DEVICES and record["dropped_client_steps"] == 0, record
    assert 0 <= record["test_accuracy"] <= 1 and record["steps"] == 1, record
    for name in ("config.json", "mpsl_model.pt", RESUME_STATE_FILE, RESUME_CONFIG_FILE):
        assert (folder / name).is_file(), name
    assert "[MPSL] 3 clients" in run.stream, run.diagnostics
    # each device built its own partition folder, holding the samples a simulation gives that partition
    app_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    config = parse_run_config({**app_config, "dataset-split-type": "iid"})
    built = sorted((tmp_path / "cache" / PARTITIONS_DIR).glob("*/partition-*-of-3"))
    assert [folder.name for folder in built] == [f"partition-{i}-of-{DEVICES}" for i in range(DEVICES)]
    for partition, own in enumerate(built):
        shared = client_partition(config, partition, DEVICES)
        assert np.array_equal(np.load(own / "labels.npy"), shared.labels.numpy()), own


def test_the_printed_instructions_are_the_commands_the_loopback_test_runs(tmp_path):
    deployment = write_deployment(tmp_path, ["127.0.0.1"], 2)
    printed = instructions(deployment)
    assert " ".join(deployment.superlink_command()) in printed
    assert " ".join(deployment.register_command(1)) in printed
    assert "flower-supernode --superlink 127.0.0.1:9093 --root-certificates" in printed
