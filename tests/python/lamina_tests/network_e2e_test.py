"""End to end for corporate networks: proxies from the environment, CA trust, and the redirect policy.

Everything runs on loopback. Registries are real `docker-registry` processes, except where blob GETs
must be redirected: there a small Python registry (serving one image from an OCI layout) stands in,
because what is asserted is what the client sends where it is redirected.

"Reached only through the proxy": the registries are named `*.test` hosts that only the test proxy
routes (to 127.0.0.1 ports), and the lamina under test runs in this process with getaddrinfo guarded so
that resolving a `.test` name fails at once (no DNS query leaves the machine) and is recorded: a client
that bypassed the proxy would fail, and the guard shows it never even tried.

The "system" trust store is simulated with SSL_CERT_FILE/SSL_CERT_DIR, which OpenSSL's default verify
paths (what `load_default_certs` loads) honour: the system CA is the only one there.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import lamina.cli
from lamina.registry.push import parse_targets, push
from lamina.registry.retry import RetryPolicy
from lamina.registry.transport import RegistryOptions
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, oci_manifest, write_oci_dir
from lamina_tests.support.cliproc import run_cli
from lamina_tests.support.netservices import HTTPProxy, make_ca, make_cert, start_tls_registry
from lamina_tests.support.services import Registry, start_registry

FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1, retry_after_cap=1.0, window=10.0)
USER, PASSWORD = "lamina", "s3cret-pass"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
               "SSL_CERT_FILE", "SSL_CERT_DIR", "LAMINA_CERTS_D")


def _image(tag: str) -> FakeImage:
    return FakeImage([
        FakeLayer({"etc/": None, "etc/os-release": f"ID={tag}\n".encode()}, "ADD base /"),
        FakeLayer({"opt/app/data": tag.encode() * 4000}, "COPY app /opt/app", "gzip"),
    ])


def _layout(tmp: Path, tag: str) -> str:
    path = str(tmp / f"layout-{tag}")
    write_oci_dir(_image(tag), path, "latest")
    return path


@dataclass
class Net:
    """The module's services: CAs, registries and the image each holds (by digest)."""

    tmp: Path
    private_ca: Tuple[str, str]  # given with --ca-bundle
    system_ca: Tuple[str, str]  # in the simulated system store
    client_ca: Tuple[str, str]  # signs the certs.d client certificate
    private_tls: Registry  # HTTPS, certificate for registry.test and 127.0.0.1 from private_ca
    system_tls: Registry  # HTTPS, certificate for 127.0.0.1 from system_ca
    mutual_tls: Registry  # HTTPS from private_ca, requiring a client certificate from client_ca
    plain: Registry  # plain HTTP on 127.0.0.1
    client_cert: Tuple[str, str] = ("", "")  # (certificate, key) from client_ca
    digests: Dict[str, str] = field(default_factory=dict)  # registry host -> manifest digest of net/app


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("net")
    private_ca, system_ca, client_ca = (make_ca(tmp / "ca", n) for n in ("private-ca", "system-ca", "client-ca"))
    private_cert = make_cert(tmp / "certs", "private", private_ca, "DNS:registry.test,IP:127.0.0.1")
    system_cert = make_cert(tmp / "certs", "system", system_ca, "IP:127.0.0.1")
    client_cert = make_cert(tmp / "certs", "client", client_ca, client=True)
    started: List[Registry] = []
    try:
        for root, (cert, key), client in (("private", private_cert, None), ("system", system_cert, None),
                                          ("mutual", private_cert, client_ca[0])):
            started.append(start_tls_registry(tmp / f"registry-{root}", cert, key, client_ca=client))
        started.append(start_registry(tmp / "registry-plain"))
        n = Net(tmp, private_ca, system_ca, client_ca, *started)
        certs_d = tmp / "push-certs.d" / n.mutual_tls.host
        certs_d.mkdir(parents=True)
        os.symlink(client_cert[0], certs_d / "client.cert")
        os.symlink(client_cert[1], certs_d / "client.key")
        bundle = tmp / "both-cas.pem"
        bundle.write_text(Path(private_ca[0]).read_text() + Path(system_ca[0]).read_text())
        options = RegistryOptions(ca_bundle=str(bundle), certs_d=(str(tmp / "push-certs.d"),), retry=FAST)
        for registry in started:
            [result] = push(open_image("oci:" + _layout(tmp, registry.root.name)),
                            parse_targets([f"{registry.host}/net/app:1"]), options)
            n.digests[registry.host] = result.digest
        n.client_cert = client_cert
        yield n
    finally:
        for registry in started:
            registry.stop()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No proxy, CA or credential settings from the machine: an empty Docker config, no certs.d, and a
    "system" trust store of nothing (tests that need one put a CA there)."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "docker-config").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("LAMINA_CERTS_D", str(tmp_path / "no-certs.d"))
    return tmp_path


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Names lamina tried to resolve itself; a `.test` name fails at once, without a DNS query."""
    real = socket.getaddrinfo
    names: List[str] = []

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        text = host.decode() if isinstance(host, bytes) else str(host)
        names.append(text)
        if text.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (the test's guard)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return names


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str, str]:  # type: ignore[type-arg]
    code = lamina.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _ref(host: str, net: Net, via: Optional[str] = None) -> str:
    return f"docker://{via or host}/net/app@{net.digests[host]}"


# -- proxies ------------------------------------------------------------------------------------------------


def test_a_registry_only_the_proxy_reaches_is_pulled_through_connect_and_through_forwarding(
        net: Net, clean_env: Path, resolved: List[str], capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tls_name, plain_name = f"registry.test:{net.private_tls.port}", f"plain.test:{net.plain.port}"
    tls_ref, plain_ref = _ref(net.private_tls.host, net, tls_name), _ref(net.plain.host, net, plain_name)

    # without a proxy the names do not resolve: only the proxy knows them
    code, _, err = _cli(capsys, "validate", tls_ref, "--ca-bundle", net.private_ca[0])
    assert code == 2 and err == f"lamina: error: {tls_ref}: cannot resolve registry host {tls_name}; check the name\n"

    proxy = HTTPProxy({tls_name: ("127.0.0.1", net.private_tls.port), plain_name: ("127.0.0.1", net.plain.port)})
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        resolved.clear()
        code, out, err = _cli(capsys, "validate", tls_ref, "--ca-bundle", net.private_ca[0])
        assert code == 0, err
        assert out.startswith(f"{tls_ref}: ok, 2 layers")
        # https: one CONNECT tunnel (kept alive) to the name, TLS verified for registry.test inside it
        assert {(r.method, r.target, r.status) for r in proxy.seen()} == {("CONNECT", tls_name, 200)}
        # plain HTTP (listed --insecure): the TLS probe's CONNECT finds no TLS, then absolute-URI forwarding
        code, out, err = _cli(capsys, "validate", plain_ref, "--insecure", plain_name)
        assert code == 0, err
        forwarded = [r.target for r in proxy.seen() if r.method == "GET"]
        assert f"http://{plain_name}/v2/net/app/manifests/{net.digests[net.plain.host]}" in forwarded
        assert all(t.startswith(f"http://{plain_name}/v2/") for t in forwarded) and len(forwarded) >= 4
        assert not [n for n in resolved if n.endswith(".test")]  # lamina never resolved a name itself
    finally:
        proxy.stop()


def test_no_proxy_bypasses_the_proxy_and_loopback_is_never_proxied(
        net: Net, clean_env: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _ref(net.plain.host, net)
    proxy = HTTPProxy({net.plain.host: ("127.0.0.1", net.plain.port)})
    try:
        monkeypatch.setenv("https_proxy", proxy.url)  # lower case, as pip and Docker honour it too
        monkeypatch.setenv("http_proxy", proxy.url)
        for no_proxy in ("127.0.0.1", f"localhost,127.0.0.1:{net.plain.port}", "127.0.0.0/8", "*"):
            monkeypatch.setenv("no_proxy", no_proxy)
            code, _, err = _cli(capsys, "validate", ref)
            assert code == 0, err
            assert proxy.seen() == [], no_proxy
        # and a loopback registry is never proxied, whatever NO_PROXY says (as Docker and Go): the
        # proxy would get the requests, and credentials, meant for this machine
        for no_proxy in (f"127.0.0.1:{net.plain.port + 1},.example.com", ""):
            monkeypatch.setenv("no_proxy", no_proxy)
            code, _, err = _cli(capsys, "validate", ref)
            assert code == 0, err
            assert proxy.seen() == [], no_proxy
    finally:
        proxy.stop()


def test_proxy_credentials_in_the_url_are_sent_as_proxy_authorization(
        net: Net, clean_env: Path, resolved: List[str], capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tls_name = f"registry.test:{net.private_tls.port}"
    ref = _ref(net.private_tls.host, net, tls_name)
    user, password = "corp user", "p@ss:w/rd"
    proxy = HTTPProxy({tls_name: ("127.0.0.1", net.private_tls.port)}, credentials=(user, password))
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        code, _, err = _cli(capsys, "validate", ref, "--ca-bundle", net.private_ca[0])
        assert code == 2
        assert err == (f"lamina: error: {ref}: proxy {proxy.url} (HTTPS_PROXY) refused to forward to {tls_name} "
                       "without valid proxy credentials (HTTP 407); put them in HTTPS_PROXY as "
                       "http://USER:PASSWORD@HOST:PORT (percent-encoded)\n")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with(user, password))
        code, _, err = _cli(capsys, "validate", ref, "--ca-bundle", net.private_ca[0])
        assert code == 0, err
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        assert [r.status for r in proxy.seen()][-1] == 200
        assert {r.proxy_authorization for r in proxy.seen() if r.status == 200} == {expected}
        assert password not in err
    finally:
        proxy.stop()


# -- CA trust -----------------------------------------------------------------------------------------------


def _system_store(tmp: Path, ca: Optional[str]) -> Dict[str, str]:
    """SSL_CERT_FILE/SSL_CERT_DIR making `ca` (or nothing) the whole system trust store."""
    (tmp / "empty-cert-dir").mkdir(exist_ok=True)
    store = tmp / "system-store.pem"
    store.write_text(Path(ca).read_text() if ca else "")
    return {"SSL_CERT_FILE": str(store), "SSL_CERT_DIR": str(tmp / "empty-cert-dir")}


def test_ca_bundle_adds_to_the_system_roots(net: Net, clean_env: Path) -> None:
    env = {**os.environ, **_system_store(clean_env, net.system_ca[0])}
    private, system = _ref(net.private_tls.host, net), _ref(net.system_tls.host, net)
    for ref in (private, system):  # both verify: the private CA from --ca-bundle, the other from the system
        run = run_cli(["validate", ref, "--ca-bundle", net.private_ca[0]], env=env)
        assert run.returncode == 0, run.stderr
    # the controls: each registry fails without its CA, so each CA above is what made it verify
    run = run_cli(["validate", private], env=env)
    assert run.returncode == 2 and "certificate verify failed" in run.stderr, run.stderr
    run = run_cli(["validate", system, "--ca-bundle", net.private_ca[0]],
                  env={**os.environ, **_system_store(clean_env, None)})
    assert run.returncode == 2 and "certificate verify failed" in run.stderr, run.stderr
    assert run.stderr.count("\n") == 0 and run.stderr.startswith("lamina: error: ")


def test_docker_certs_d_gives_a_registry_its_ca_and_client_certificate(net: Net, clean_env: Path) -> None:
    root = clean_env / "certs.d"
    host_dir = root / net.mutual_tls.host
    host_dir.mkdir(parents=True)
    os.symlink(net.private_ca[0], host_dir / "ca.crt")
    env = {**os.environ, **_system_store(clean_env, None), "LAMINA_CERTS_D": str(root)}
    ref = _ref(net.mutual_tls.host, net)
    # the CA alone: the server verifies, then refuses a client that has no certificate
    run = run_cli(["validate", ref], env=env)
    assert run.returncode == 2 and run.stderr.startswith("lamina: error: ") and "\n" not in run.stderr, run.stderr
    assert "certificate verify failed" not in run.stderr
    cert, key = net.client_cert
    os.symlink(cert, host_dir / "client.cert")
    os.symlink(key, host_dir / "client.key")
    run = run_cli(["validate", ref], env=env)
    assert run.returncode == 0, run.stderr
    # the directory is per registry: the same CA does not apply to another host:port
    run = run_cli(["validate", _ref(net.private_tls.host, net)], env=env)
    assert run.returncode == 2 and "certificate verify failed" in run.stderr, run.stderr
    # the rootless location, ~/.config/docker/certs.d, when LAMINA_CERTS_D is not set
    home = clean_env / "home"
    (home / ".config" / "docker").mkdir(parents=True)
    os.symlink(root, home / ".config" / "docker" / "certs.d")
    env = {k: v for k, v in env.items() if k not in ("LAMINA_CERTS_D", "XDG_CONFIG_HOME")}
    run = run_cli(["validate", ref], env={**env, "HOME": str(home)})
    assert run.returncode == 0, run.stderr


# -- redirects ----------------------------------------------------------------------------------------------


class _Recorded(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type, context: Optional[ssl.SSLContext]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: List[Tuple[str, str, Optional[str]]] = []  # (method, path, Authorization)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _serve(layout: str, redirect: Callable[[str], str], context: Optional[ssl.SSLContext],
           auth: Optional[str] = None) -> _Recorded:
    """A registry of one image (Basic `auth` required if given) whose blob GETs answer 307 to
    redirect(digest); it also serves /storage/<digest> (requiring the same auth), and every request is
    recorded with its Authorization header."""
    manifest = oci_manifest(layout)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            given = self.headers.get("Authorization")
            server.requests.append((self.command, self.path, given))
            if auth is not None and given != auth:
                self._send(401, b"{}", {"WWW-Authenticate": 'Basic realm="test"'})
                return
            digest = self.path.rsplit("/", 1)[-1]
            blob = Path(layout, "blobs", "sha256", digest[len("sha256:"):]) if digest.startswith("sha256:") else None
            if self.path == "/v2/":
                self._send(200, b"{}")
            elif "/manifests/" in self.path and blob and blob.is_file():
                self._send(200, blob.read_bytes(), {"Content-Type": manifest["mediaType"],
                                                    "Docker-Content-Digest": digest})
            elif "/blobs/" in self.path and blob and blob.is_file():
                self._send(307, b"", {"Location": redirect(digest)})
            elif self.path.startswith("/storage/") and blob and blob.is_file():
                self._send(200, blob.read_bytes())
            else:
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')

        do_HEAD = do_GET  # noqa: N815

    server = _Recorded(Handler, context)
    return server


@pytest.fixture(scope="module")
def redirects(net: Net) -> Iterator[Dict[str, object]]:
    layout = _layout(net.tmp, "redirected")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = make_cert(net.tmp / "certs", "loopback", net.private_ca, "DNS:localhost,IP:127.0.0.1")
    server_context.load_cert_chain(*cert)
    storage_tls = _serve(layout, lambda d: "", server_context)  # no auth: records what it is sent
    storage_plain = _serve(layout, lambda d: "", None)
    yield {"layout": layout, "tls_context": server_context, "storage_tls": storage_tls,
           "storage_plain": storage_plain}
    storage_tls.stop()
    storage_plain.stop()


def _docker_config(tmp: Path, host: str) -> str:
    directory = tmp / f"docker-config-{host.replace(':', '_')}"
    directory.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return str(directory)


def _manifest_digest(layout: str) -> str:
    return json.loads(Path(layout, "index.json").read_text())["manifests"][0]["digest"]


_BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize("where", ["same origin", "other port", "other host"])
def test_a_tls_registry_redirecting_blob_gets_over_https(
        where: str, net: Net, redirects: Dict[str, object], clean_env: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    layout, storage = str(redirects["layout"]), redirects["storage_tls"]
    assert isinstance(storage, _Recorded)
    port: List[int] = []
    target = {
        "same origin": lambda d: f"https://127.0.0.1:{port[0]}/storage/{d}",
        "other port": lambda d: f"https://127.0.0.1:{storage.port}/storage/{d}",  # type: ignore[union-attr]
        "other host": lambda d: f"https://localhost:{storage.port}/storage/{d}",  # type: ignore[union-attr]
    }[where]
    registry = _serve(layout, target, redirects["tls_context"], auth=_BASIC)  # type: ignore[arg-type]
    port.append(registry.port)
    storage.requests.clear()
    try:
        host = f"127.0.0.1:{registry.port}"
        monkeypatch.setenv("DOCKER_CONFIG", _docker_config(clean_env, host))
        ref = f"docker://{host}/net/app@{_manifest_digest(layout)}"
        code, out, err = _cli(capsys, "validate", ref, "--ca-bundle", net.private_ca[0])
        assert code == 0, err
        fetched = registry.requests if where == "same origin" else storage.requests
        stored = [(path, given) for method, path, given in fetched if path.startswith("/storage/")]
        assert len(stored) == 3  # the config and both layers, fetched where the registry sent them
        if where == "same origin":  # the registry's own origin gets its credentials
            assert {given for _, given in stored} == {_BASIC}
        else:
            assert {given for _, given in stored} == {None}  # never the registry's credentials
        assert [given for _, path, given in registry.requests if "/blobs/" in path][-1] == _BASIC
    finally:
        registry.stop()


def test_a_plain_registry_redirecting_to_another_port_keeps_its_credentials(
        redirects: Dict[str, object], clean_env: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    layout, storage = str(redirects["layout"]), redirects["storage_plain"]
    assert isinstance(storage, _Recorded)
    storage.requests.clear()
    registry = _serve(layout, lambda d: f"http://127.0.0.1:{storage.port}/storage/{d}", None, auth=_BASIC)  # type: ignore[union-attr]
    try:
        host = f"127.0.0.1:{registry.port}"
        monkeypatch.setenv("DOCKER_CONFIG", _docker_config(clean_env, host))
        code, _, err = _cli(capsys, "validate", f"docker://{host}/net/app@{_manifest_digest(layout)}")
        assert code == 0, err
        assert len(storage.requests) == 3 and {given for _, _, given in storage.requests} == {None}
    finally:
        registry.stop()


@pytest.mark.parametrize("kind", ["downgrade to http", "ftp", "loop"])
def test_refused_redirects_are_one_line_errors_naming_the_registry_and_target(
        kind: str, net: Net, redirects: Dict[str, object], clean_env: Path) -> None:
    layout, storage = str(redirects["layout"]), redirects["storage_plain"]
    assert isinstance(storage, _Recorded)
    storage.requests.clear()
    port: List[int] = []
    target = {
        "downgrade to http": lambda d: f"http://127.0.0.1:{storage.port}/storage/{d}",  # type: ignore[union-attr]
        "ftp": lambda d: f"ftp://127.0.0.1:{storage.port}/storage/{d}",  # type: ignore[union-attr]
        "loop": lambda d: f"https://127.0.0.1:{port[0]}/v2/net/app/blobs/{d}",
    }[kind]
    registry = _serve(layout, target, redirects["tls_context"], auth=_BASIC)  # type: ignore[arg-type]
    port.append(registry.port)
    try:
        host = f"127.0.0.1:{registry.port}"
        env = {**os.environ, "DOCKER_CONFIG": _docker_config(clean_env, host)}
        ref = f"docker://{host}/net/app@{_manifest_digest(layout)}"
        run = run_cli(["validate", ref, "--ca-bundle", net.private_ca[0]], env=env)
        assert run.returncode == 2
        assert run.stderr.startswith(f"lamina: error: docker://{host}/net/app") and "\n" not in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
        expected = {
            "downgrade to http": f"{host} redirected from https to plain http (http://127.0.0.1:{storage.port}); "  # type: ignore[union-attr]
                                 "lamina never downgrades a redirect",
            "ftp": f"{host} redirected to a ftp URL (ftp://127.0.0.1:{storage.port}); "  # type: ignore[union-attr]
                   "lamina follows only http and https redirects",
            "loop": f"{host} redirected more than 10 times in a row (the last to https://{host}); lamina stops there",
        }[kind]
        assert run.stderr.endswith(expected), run.stderr
        assert storage.requests == []  # nothing was sent where lamina refused to go
    finally:
        registry.stop()
