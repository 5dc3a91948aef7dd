"""Tests of TLS trust: certs.d roots from the environment, a registry's certs.d files, the context built."""
from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from lamina.registry.errors import RegistryError
from lamina.registry.tls import SYSTEM_CERTS_D, HostCerts, certs_d_roots, host_certs, ssl_context


def test_certs_d_roots_from_the_environment() -> None:
    assert certs_d_roots({"HOME": "/home/u"}) == (SYSTEM_CERTS_D, "/home/u/.config/docker/certs.d")
    assert certs_d_roots({"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg"}) == (SYSTEM_CERTS_D, "/cfg/docker/certs.d")
    assert certs_d_roots({}) == (SYSTEM_CERTS_D,)
    assert certs_d_roots({"LAMINA_CERTS_D": "/a:/b", "HOME": "/home/u"}) == ("/a", "/b")
    assert certs_d_roots({"LAMINA_CERTS_D": ""}) == ()  # set but empty: no certs.d at all


def test_host_certs_reads_cas_and_client_pairs_of_that_host_only(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for name in ("registry.example:5000/ca.crt", "registry.example:5000/extra.crt", "registry.example:5000/me.cert",
                 "registry.example:5000/me.key", "registry.example:5000/README", "registry.example/other.crt"):
        (one / name).parent.mkdir(parents=True, exist_ok=True)
        (one / name).write_text("x")
    (two / "registry.example:5000").mkdir(parents=True)
    (two / "registry.example:5000" / "rootless.crt").write_text("x")
    d = "registry.example:5000"
    assert host_certs([str(one), str(two), str(tmp_path / "missing")], d) == HostCerts(
        (f"{one}/{d}/ca.crt", f"{one}/{d}/extra.crt", f"{two}/{d}/rootless.crt"),
        ((f"{one}/{d}/me.cert", f"{one}/{d}/me.key"),))
    assert host_certs([str(one)], "registry.example") == HostCerts((f"{one}/registry.example/other.crt",))
    assert host_certs([str(one)], "elsewhere.example") == HostCerts()


@pytest.mark.parametrize("present, message", [
    ("client.cert", "client.cert has no key client.key beside it; a client certificate needs both"),
    ("client.key", "client.key has no certificate client.cert beside it; a client key needs both"),
])
def test_half_a_client_pair_is_an_error(tmp_path: Path, present: str, message: str) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / present).write_text("x")
    with pytest.raises(RegistryError, match=message):
        host_certs([str(tmp_path)], "h")


def _ca(tmp_path: Path) -> str:
    cert = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "ca.key"),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=lamina-unit-test-ca"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    return str(cert)


def test_the_ca_bundle_and_certs_d_add_to_the_system_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system, extra = tmp_path / "system", tmp_path / "extra"
    system.mkdir()
    extra.mkdir()
    system_ca, extra_ca = _ca(system), _ca(extra)
    monkeypatch.setenv("SSL_CERT_FILE", system_ca)  # OpenSSL's default paths: the "system" store of this test
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-dir"))

    def subjects(context: ssl.SSLContext) -> list:  # type: ignore[type-arg]
        return [c["subject"] for c in context.get_ca_certs()]

    assert len(subjects(ssl_context(None))) == 1
    context = ssl_context(extra_ca)
    assert len(subjects(context)) == 2  # the system's root and the bundle's, not the bundle's alone
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(subjects(ssl_context(None, HostCerts((extra_ca,))))) == 2


@pytest.mark.parametrize("content, message", [
    (None, "--ca-bundle {path}: cannot read it (No such file or directory); give a readable PEM file"),
    ("not a certificate\n", "--ca-bundle {path}: no PEM certificates in it"),
], ids=["missing", "not PEM"])
def test_an_unusable_ca_bundle_is_a_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RegistryError) as info:
        ssl_context(str(path))
    assert str(info.value).startswith(message.format(path=path)) and "\n" not in str(info.value)
