"""Keys and commands for a secure Deployment Engine federation: `python -m mpsl_flower.tools.deployment`.

    python -m mpsl_flower.tools.deployment --out ~/mpsl-deployment --address 192.168.1.10 --devices 3

Writes, under `--out`:
  ca.crt, ca.key                  a certificate authority (keep ca.key off the devices)
  superlink.crt, superlink.key    the SuperLink's TLS certificate, valid for every `--address` given
  device-<i>/supernode(.pub)      one SuperNode key pair per device (OpenSSH, NIST P-384: what
                                  Flower 1.42's SuperNode authentication takes)
  config.toml                     the `[superlink.<federation>]` entry `flwr` needs (TLS, the CA)
and prints the exact commands that start the SuperLink (TLS and SuperNode authentication on),
register each device's public key, start each SuperNode, and submit the run.

Why our own command: Flower documents these steps with openssl and ssh-keygen invocations; one
command that writes consistent files and prints the matching commands is what a user with ten
devices needs, and the end-to-end test (tests/test_deployment.py) runs exactly these commands.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import shlex
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_PORT = 9093
DEFAULT_FEDERATION = "mpsl"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")  # always in the SuperLink certificate (`_certified_names`)
VALID_DAYS = 365
CURVE = ec.SECP384R1  # a NIST curve: `flwr supernode register` refuses others


@dataclass(frozen=True)
class Deployment:
    """The files `write_deployment` made and what the commands need to know."""

    folder: Path
    addresses: tuple[str, ...]
    port: int
    devices: int
    federation: str

    @property
    def superlink(self) -> str:
        """Where SuperNodes and `flwr` reach the SuperLink (the first address)."""
        return f"{self.addresses[0]}:{self.port}"

    def device_key(self, device: int) -> Path:
        return self.folder / f"device-{device}" / "supernode"

    def superlink_command(self, host: str = "0.0.0.0", database: Path | None = None) -> list[str]:
        return [
            "flower-superlink",
            "--ssl-ca-certfile",
            str(self.folder / "ca.crt"),
            "--ssl-certfile",
            str(self.folder / "superlink.crt"),
            "--ssl-keyfile",
            str(self.folder / "superlink.key"),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host",
            host,
            "--port",
            str(self.port),
            "--database",
            str(database or self.folder / "superlink.db"),
        ]

    def register_command(self, device: int) -> list[str]:
        return ["flwr", "supernode", "register", f"{self.device_key(device)}.pub", self.federation]

    def supernode_command(self, device: int, runtime_port: int | None = None) -> list[str]:
        command = [
            "flower-supernode",
            "--superlink",
            self.superlink,
            "--root-certificates",
            str(self.folder / "ca.crt"),
            "--auth-supernode-private-key",
            str(self.device_key(device)),
            "--node-config",
            f"partition-id={device} num-partitions={self.devices}",
        ]
        if runtime_port is not None:  # several SuperNodes on one machine need one Runtime API port each
            command += ["--port", str(runtime_port)]
        return command

    def run_command(self) -> list[str]:
        return ["flwr", "run", ".", self.federation, "--stream"]


def _certified_names(addresses: list[str]) -> list[str]:
    """The addresses the SuperLink's certificate names: the given ones, then loopback, which the SuperLink's
    own SuperExec uses to reach it (it starts the ServerApp) whatever address the devices use."""
    return list(dict.fromkeys([*addresses, *LOOPBACK_NAMES]))


def write_deployment(
    folder: Path, addresses: list[str], devices: int, port: int = DEFAULT_PORT, federation: str = DEFAULT_FEDERATION
) -> Deployment:
    """Create the CA, the SuperLink's certificate, one key pair per device and `config.toml` in `folder`."""
    if not addresses:
        raise ValueError("give at least one --address: the name or IP the devices use to reach the SuperLink")
    if devices < 1:
        raise ValueError(f"--devices={devices}: a federation needs at least one device")
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(CURVE())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mpsl-flower CA")])
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(CURVE())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])])
    server = (
        _certificate(server_name, ca_name, server_key.public_key(), ca_key)
        .add_extension(x509.SubjectAlternativeName([_san(a) for a in _certified_names(addresses)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_secret(folder / "ca.key", _pem_key(ca_key))
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_secret(folder / "superlink.key", _pem_key(server_key))
    (folder / "superlink.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    deployment = Deployment(folder, tuple(addresses), port, devices, federation)
    for device in range(devices):
        key = ec.generate_private_key(CURVE())
        path = deployment.device_key(device)
        path.parent.mkdir(exist_ok=True)
        openssh = serialization.PrivateFormat.OpenSSH
        _write_secret(path, key.private_bytes(serialization.Encoding.PEM, openssh, serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        path.with_suffix(".pub").write_bytes(public + b"\n")
    (folder / "config.toml").write_text(federation_entry(deployment))
    return deployment


def federation_entry(deployment: Deployment) -> str:
    """The `config.toml` entry of `$FLWR_HOME` (default ~/.flwr) that points `flwr` at the SuperLink over TLS."""
    return (
        f'[superlink.{deployment.federation}]\naddress = "{deployment.superlink}"\n'
        f'root-certificates = "{deployment.folder / "ca.crt"}"\n'
    )


def instructions(deployment: Deployment) -> str:
    """The commands, in order, for the README's deployment section and the command line."""

    def line(command: list[str]) -> str:
        return shlex.join(command)

    devices = "\n".join(f"#   device {i}:  {line(deployment.supernode_command(i))}" for i in range(deployment.devices))
    registrations = "\n".join(line(deployment.register_command(i)) for i in range(deployment.devices))
    return f"""# 1. on the server (it holds the encoder: put the GPU here); TLS and SuperNode authentication on
{line(deployment.superlink_command())}

# 2. where you submit runs: add this entry to $FLWR_HOME/config.toml (default ~/.flwr/config.toml)
{federation_entry(deployment)}
# 3. register every device's public key with the SuperLink (from where you submit runs)
{registrations}

# 4. on each device: copy ca.crt and that device's folder to it (never ca.key or superlink.key), then
{devices}

# 5. submit the run from the project folder
{line(deployment.run_command())}
"""


def wait_for_superlink(
    port: int, ca_file: Path | None = None, timeout_s: float = 60, process: subprocess.Popen | None = None
) -> None:
    """Return once the SuperLink on this machine's `port` answers `/health` (over TLS checked against
    `ca_file`, when given); fail early if `process` (the SuperLink's) exits."""
    scheme, context = ("https", ssl.create_default_context(cafile=str(ca_file))) if ca_file else ("http", None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/health", timeout=2, context=context):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the SuperLink on port {port} did not answer within {timeout_s} s")


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signer) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _san(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_secret(path: Path, data: bytes) -> None:
    """A private key, readable by its owner only (ssh refuses looser modes)."""
    path.write_bytes(data)
    path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpsl_flower.tools.deployment", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the certificates and keys")
    parser.add_argument(
        "--address",
        action="append",
        required=True,
        help="a name or IP address the devices use to reach the SuperLink (repeat for several; the first is used)",
    )
    parser.add_argument("--devices", type=int, required=True, help="number of devices (SuperNodes)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the SuperLink's port (default {DEFAULT_PORT})")
    parser.add_argument("--federation", default=DEFAULT_FEDERATION, help="the federation's name in config.toml")
    arguments = parser.parse_args(argv)
    try:
        deployment = write_deployment(
            arguments.out, arguments.address, arguments.devices, arguments.port, arguments.federation
        )
    except ValueError as error:
        parser.error(str(error))
    print(f"# certificates and keys written to {deployment.folder}\n")
    print(instructions(deployment))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
