"""Google-style ID tokens signed by keys the tests generate, and a loopback certs server.

    issuer = TokenIssuer()                      # an RSA key and its self-signed cert
    with CertsServer(issuer) as certs:          # serves {kid: cert PEM} like Google's v1 certs URL
        verifier = IdTokenVerifier("aud", ["svc@x.iam.gserviceaccount.com"], certs.url)
        token = issuer.token(audience="aud", email="svc@x.iam.gserviceaccount.com")
        await verifier.verify(f"Bearer {token}")

`TokenIssuer()` not given to the server plays a foreign key; `unsigned_token` builds an
`alg: none` token.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

GOOGLE_ISSUER = "https://accounts.google.com"


class TokenIssuer:
    """One signing key (RS256) with a key id, like one of Google's."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._signer = crypt.RSASigner.from_string(self.private_pem, key_id=self.kid)

    @property
    def certs(self) -> dict[str, str]:
        return {self.kid: self.cert_pem}

    def claims(
        self,
        *,
        audience: str,
        email: str,
        email_verified: bool = True,
        issuer: str = GOOGLE_ISSUER,
        expires_in: int = 3600,
        issued_at: int | None = None,
    ) -> dict[str, Any]:
        iat = int(time.time()) if issued_at is None else issued_at
        return {
            "iss": issuer,
            "aud": audience,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": email,
            "email_verified": email_verified,
            "iat": iat,
            "exp": iat + expires_in,
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(self._signer, dict(claims)).decode()  # type: ignore[no-untyped-call]

    def token(self, *, audience: str, email: str, **overrides: Any) -> str:
        """A signed token; `overrides` go to `claims` (email_verified, issuer, expires_in, issued_at)."""
        return self.sign(self.claims(audience=audience, email=email, **overrides))

    def bearer(self, *, audience: str, email: str, **overrides: Any) -> str:
        return f"Bearer {self.token(audience=audience, email=email, **overrides)}"


def unsigned_token(claims: Mapping[str, Any], kid: str = "") -> str:
    """An `alg: none` token: header and claims, empty signature."""

    def part(data: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header = {"alg": "none", "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{part(header)}.{part(claims)}."


class CertsServer:
    """Serves the issuers' certs as JSON on a loopback port, in a daemon thread; counts requests.

    Set `failure` to break it as a certs URL breaks: "error" answers 500, "hang" accepts and
    does not answer (until `failure` changes or the server stops); `delay_s` answers that much later.
    """

    def __init__(self, *issuers: TokenIssuer, max_age: int = 3600) -> None:
        self.issuers = list(issuers)
        self.max_age = max_age
        self.requests = 0
        self.failure: Literal["error", "hang"] | None = None
        self.delay_s = 0.0
        self._stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.failure == "hang":
                    while outer.failure == "hang" and not outer._stopping.wait(0.05):
                        pass
                    return  # and the connection closes unanswered
                if outer.delay_s:
                    outer._stopping.wait(outer.delay_s)
                if outer.failure == "error":
                    self.send_error(500)
                    return
                body = json.dumps({k: v for i in outer.issuers for k, v in i.certs.items()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={outer.max_age}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="certs-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/oauth2/v1/certs"

    def start(self) -> CertsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # lets hanging answers go
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> CertsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
