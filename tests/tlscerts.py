"""Test certificates made with the `openssl` CLI: a CA, servers (the centre, a node's own
port) and clients (a node to the centre, a counter to its node).

The same commands as deploy/README.md's TLS section, with short lifetimes and EC keys so a
test makes a whole set in well under a second.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA under `base`: `issue` makes certificates it signs."""

    base: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.base / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.base / f"{self.name}.key"

    @classmethod
    def make(cls, base: Path, name: str = "ca") -> Authority:
        base.mkdir(parents=True, exist_ok=True)
        ca = cls(base, name)
        _openssl("req", "-x509", *EC, "-keyout", ca.key.name, "-out", ca.cert.name, "-days", "2",
                 "-subj", f"/CN=Test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=base)  # fmt: skip
        return ca

    def issue(self, name: str, *, client: bool = False, also_client: bool = False) -> Pair:
        """A certificate for 127.0.0.1/localhost (a server) or for node `name` (a client);
        `also_client`: a server's that may also be presented as a client's (clientAuth)."""
        ext = self.base / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth,clientAuth" if also_client else "serverAuth"
        san = f"DNS:{name}" if client else "IP:127.0.0.1,DNS:localhost"
        ext.write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\nsubjectAltName={san}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        pair = Pair(self.base / f"{name}.pem", self.base / f"{name}.key")
        _openssl("req", *EC, "-keyout", pair.key.name, "-out", f"{name}.csr", "-subj",
                 f"/CN={name}", cwd=self.base)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", self.cert.name, "-CAkey",
                 self.key.name, "-CAcreateserial", "-out", pair.cert.name, "-days", "2",
                 "-extfile", ext.name, cwd=self.base)  # fmt: skip
        pair.key.chmod(0o600)
        return pair
