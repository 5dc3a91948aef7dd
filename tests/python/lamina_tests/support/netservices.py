"""Corporate-network stand-ins on loopback: an HTTP proxy that only it can route through, private CAs, TLS registries.

The proxy connects only to the routes it is given (a name such as `registry.test:5000` mapped to a
127.0.0.1 port) and answers 502 for anything else, so nothing it forwards leaves loopback.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lamina_tests.support.services import Registry, free_port

__all__ = ["HTTPProxy", "ProxyRequest", "make_ca", "make_cert", "start_tls_registry"]


@dataclass(frozen=True)
class ProxyRequest:
    method: str  # CONNECT, GET, HEAD, ...
    target: str  # host:port for CONNECT, the absolute URI otherwise
    proxy_authorization: Optional[str]
    status: int  # what the proxy answered (200 for a tunnel it opened)


@dataclass
class HTTPProxy:
    """A threaded forward proxy on 127.0.0.1: CONNECT tunnels and absolute-URI forwarding to its `routes`."""

    routes: Dict[str, Tuple[str, int]]  # "host:port" as the client names it -> (ip, port) to connect to
    credentials: Optional[Tuple[str, str]] = None  # required as Proxy-Authorization: Basic when set
    requests: List[ProxyRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _admit(self, netloc: str) -> Optional[Tuple[str, int]]:
                auth = self.headers.get("Proxy-Authorization")
                status = 200
                route = proxy.routes.get(netloc.lower())
                if proxy.credentials is not None:
                    expected = "Basic " + base64.b64encode(":".join(proxy.credentials).encode()).decode()
                    if auth != expected:
                        status = 407
                if status == 200 and route is None:
                    status = 502
                with proxy._lock:
                    proxy.requests.append(ProxyRequest(self.command, self.path, auth, status))
                if status != 200:
                    self.send_response(status)
                    if status == 407:
                        self.send_header("Proxy-Authenticate", 'Basic realm="test-proxy"')
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return None
                return route

            def do_CONNECT(self) -> None:  # noqa: N802
                route = self._admit(self.path)
                if route is None:
                    return
                upstream = socket.create_connection(route, timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                _pipe(self.connection, upstream)
                self.close_connection = True

            def _forward(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if not url.scheme or not url.netloc:
                    self.send_error(400, "absolute URI required")
                    return
                netloc = url.netloc if ":" in url.netloc else f"{url.netloc}:{80 if url.scheme == 'http' else 443}"
                route = self._admit(netloc)
                if route is None:
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = url.path + (f"?{url.query}" if url.query else "")
                lines = [f"{self.command} {path or '/'} HTTP/1.1"]
                for key, value in self.headers.items():
                    if key.lower() not in ("proxy-authorization", "proxy-connection", "connection", "keep-alive"):
                        lines.append(f"{key}: {value}")
                lines.append("Connection: close")
                with socket.create_connection(route, timeout=30) as upstream:
                    upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                    reader = upstream.makefile("rb")
                    head = []
                    while True:  # the status line and headers, with Connection: close for the client
                        line = reader.readline()
                        if line in (b"\r\n", b"\n", b""):
                            break
                        if not line.lower().startswith((b"connection:", b"keep-alive:")):
                            head.append(line)
                    self.wfile.write(b"".join(head) + b"Connection: close\r\n\r\n")
                    if self.command != "HEAD":
                        shutil.copyfileobj(reader, self.wfile)
                    self.wfile.flush()
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url_with(self, user: str, password: str) -> str:
        quote = urllib.parse.quote
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self._server.server_address[1]}"

    def seen(self) -> List[ProxyRequest]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    try:
        socks = [a, b]
        while True:
            readable, _, _ = select.select(socks, [], [], 60)
            if not readable:
                return
            for s in readable:
                data = s.recv(1 << 16)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


# -- certificates ----------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def make_ca(directory: Path, name: str) -> Tuple[str, str]:
    """A self-signed CA: (certificate PEM path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_cert(directory: Path, name: str, ca: Tuple[str, str], sans: str = "", client: bool = False) -> Tuple[str, str]:
    """A certificate signed by `ca` for `sans` (e.g. "DNS:registry.test,IP:127.0.0.1"): (cert path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (str(directory / f"{name}{s}") for s in (".cert", ".key", ".csr", ".ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    usage = "clientAuth" if client else "serverAuth"
    Path(ext).write_text((f"subjectAltName={sans}\n" if sans else "") + f"extendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext)
    return cert, key


# -- registries ------------------------------------------------------------------------------------------


def start_tls_registry(root: Path, cert: str, key: str, client_ca: Optional[str] = None) -> Registry:
    """docker-registry on 127.0.0.1 serving HTTPS with `cert`, requiring a client certificate signed by
    `client_ca` if given; returned once it listens."""
    root.mkdir(parents=True)
    port = free_port()
    tls: dict = {"certificate": cert, "key": key}  # type: ignore[type-arg]
    if client_ca:
        tls["clientcas"] = [client_ca]
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(8).hex(), "tls": tls},
    }
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(root / "access.log", "ab") as out, open(root / "registry.log", "ab") as err:
        proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True, cwd=str(root))
    registry = Registry(port=port, root=root, process=proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return registry
        except OSError:
            time.sleep(0.1)  # polling for readiness, not synchronising: the port opens when it opens
    registry.stop()
    raise RuntimeError(f"TLS registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
