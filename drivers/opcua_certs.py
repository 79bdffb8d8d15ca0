"""Generate the OPC UA application certificates of a cell (``python -m drivers.opcua_certs DIR``).

Creates, in ``DIR`` (idempotent: existing valid files are kept)::

    client.der / client.key.pem          axcell's OPC UA client (machine drivers), urn:axcell:client
    server.der / server.key.pem          axcell's northbound PackML server, urn:axcell:server
    sim-sealer.der / sim-sealer.key.pem  the simulated case sealer server, urn:axcell:sim:sealer
    trusted/clients/client.der           client certificates the servers accept
    trusted/servers/*.der                server certificates the client accepts

Keys are written with mode 0600.  Keep ``DIR`` out of version control
(the default, ``build/opcua-pki``, is under the ignored ``build/``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from asyncua.crypto import cert_gen

DEFAULT_DIR = Path("build/opcua-pki")

APPS = {
    "client": ("urn:axcell:client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    "server": ("urn:axcell:server", [ExtendedKeyUsageOID.SERVER_AUTH]),
    "sim-sealer": ("urn:axcell:sim:sealer", [ExtendedKeyUsageOID.SERVER_AUTH]),
}


def make_cert(directory: Path, name: str, app_uri: str, usage: list, *, days: int = 365,
              force: bool = False) -> tuple[Path, Path]:
    """One self-signed application certificate (DER) and its key (PEM, 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.key.pem"
    if cert_path.exists() and key_path.exists() and not force:
        return cert_path, key_path
    key = cert_gen.generate_private_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri), x509.DNSName("localhost"),
                                    x509.DNSName(socket.gethostname())]
    import ipaddress

    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {"organizationName": "axcell"}, sans, extended=usage, days=days)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


def generate(directory: Path | str = DEFAULT_DIR, *, force: bool = False) -> dict[str, tuple[Path, Path]]:
    """Create every certificate and the two trust lists; returns name → (cert, key)."""
    d = Path(directory)
    out = {name: make_cert(d, name, uri, usage, force=force) for name, (uri, usage) in APPS.items()}
    (d / "trusted" / "clients").mkdir(parents=True, exist_ok=True)
    (d / "trusted" / "servers").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out["client"][0], d / "trusted" / "clients" / "client.der")
    for name in ("server", "sim-sealer"):
        shutil.copyfile(out[name][0], d / "trusted" / "servers" / f"{name}.der")
    gi = d / ".gitignore"
    if not gi.exists():
        gi.write_text("*\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drivers.opcua_certs", description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    args = ap.parse_args(argv)
    for name, (cert, key) in generate(args.dir, force=args.force).items():
        print(f"{name:<11} {cert}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
