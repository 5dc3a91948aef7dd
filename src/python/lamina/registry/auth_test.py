"""Tests of registry credentials: the Docker config, credential helpers, challenges and token requests."""
from __future__ import annotations

import base64
import json
import os
import stat
import urllib.parse
from pathlib import Path

import pytest

from lamina.registry.auth import (
    Challenge,
    Credentials,
    DockerConfig,
    config_path,
    find_credentials,
    load_docker_config,
    merge_scopes,
    normalize_registry,
    parse_challenges,
    parse_docker_config,
    parse_helper_output,
    parse_token_response,
    token_request,
)
from lamina.registry.errors import AuthError


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_config_path_follows_docker_config_then_home() -> None:
    assert config_path({"DOCKER_CONFIG": "/etc/dc", "HOME": "/home/u"}) == "/etc/dc/config.json"
    assert config_path({"HOME": "/home/u"}) == "/home/u/.docker/config.json"


@pytest.mark.parametrize("key, host", [
    ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"), ("docker.io", "docker.io"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"), ("https://GHCR.io/v2/", "ghcr.io"), ("localhost:5000", "localhost:5000")])
def test_normalize_registry(key: str, host: str) -> None:
    assert normalize_registry(key) == host


def test_parse_docker_config_auths_and_helpers() -> None:
    data = json.dumps({
        "auths": {
            "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pass")},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "ghcr.io": {"identitytoken": "refresh-me"},
            "quay.io": {},
        },
        "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"},
        "credsStore": "desktop",
    }).encode()
    config = parse_docker_config(data, "/x/config.json")
    auths = dict(config.auths)
    assert auths["docker.io"].username == "hubuser" and auths["docker.io"].password == "hub:pass"
    assert auths["127.0.0.1:5000"].basic == "Basic " + _b64("u:p")
    assert auths["ghcr.io"].identity_token == "refresh-me" and auths["ghcr.io"].basic is None
    assert config.cred_helpers == (("123.dkr.ecr.us-east-1.amazonaws.com", "ecr-login"),)
    assert config.creds_store == "desktop"
    assert "hub:pass" not in repr(auths["docker.io"])


@pytest.mark.parametrize("data, message", [
    (b"{", "malformed JSON"),
    (b"[]", "expected a JSON object"),
    (json.dumps({"auths": {"h": {"auth": "!!!"}}}).encode(), r"auths\['h'\]: the auth field is not base64"),
    (json.dumps({"auths": {"h": {"auth": _b64("nocolon")}}}).encode(), "decodes to no USER:PASSWORD pair"),
    (json.dumps({"auths": []}).encode(), "auths is not a JSON object"),
], ids=["truncated", "not-object", "bad-base64", "no-colon", "auths-list"])
def test_malformed_docker_config_names_the_file(data: bytes, message: str) -> None:
    with pytest.raises(AuthError, match="/x/config.json: .*" + message):
        parse_docker_config(data, "/x/config.json")


def test_missing_config_file_is_empty(tmp_path: Path) -> None:
    assert load_docker_config(str(tmp_path / "none.json")) == DockerConfig(path="")


def _helper(tmp_path: Path, name: str, script: str) -> None:
    path = tmp_path / "bin" / f"docker-credential-{name}"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_credential_helpers_are_run_and_credsstore_falls_back_to_auths(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "fake", 'read host; printf \'{"ServerURL":"%s","Username":"helper-user","Secret":"s3"}\' "$host"\n')
    _helper(tmp_path, "store", 'read host; if [ "$host" = "https://index.docker.io/v1/" ]; then '
                               'printf \'{"Username":"<token>","Secret":"idt"}\'; else echo "credentials not found in native keychain"; exit 1; fi\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = parse_docker_config(json.dumps({
        "auths": {"plain.example": {"auth": _b64("a:b")}},
        "credHelpers": {"helped.example:5000": "fake"},
        "credsStore": "store",
    }).encode(), "c.json")
    helped = find_credentials(config, "helped.example:5000")
    assert helped == Credentials("helper-user", "s3", origin="docker-credential-fake")
    hub = find_credentials(config, "docker.io")
    assert hub is not None and hub.identity_token == "idt" and hub.origin == "docker-credential-store"
    plain = find_credentials(config, "plain.example")
    assert plain is not None and plain.basic == "Basic " + _b64("a:b")
    assert find_credentials(config, "other.example") is None


def test_missing_or_failing_helper_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(tmp_path, "broken", "echo 'keychain locked' >&2; exit 3\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    config = DockerConfig("c.json", cred_helpers=(("a.example", "absent"), ("b.example", "broken")))
    with pytest.raises(AuthError, match=r"credential helper docker-credential-absent \(configured for a.example in the "
                                        r"Docker config\) is not on PATH"):
        find_credentials(config, "a.example")
    with pytest.raises(AuthError, match=r"docker-credential-broken failed for b.example \(exit 3\): keychain locked"):
        find_credentials(config, "b.example")


def test_helper_output_must_be_json() -> None:
    with pytest.raises(AuthError, match="docker-credential-x get printed no credentials JSON"):
        parse_helper_output(b"oops", "x")


@pytest.mark.parametrize("header, expected", [
    ('Basic realm="lamina-test"', (Challenge("basic", (("realm", "lamina-test"),)),)),
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
     (Challenge("bearer", (("realm", "https://auth.docker.io/token"), ("service", "registry.docker.io"),
                           ("scope", "repository:library/busybox:pull"))),)),
    ('Bearer realm="https://r/t", scope="repository:a:pull,push repository:b:pull", error="insufficient_scope"',
     (Challenge("bearer", (("realm", "https://r/t"), ("scope", "repository:a:pull,push repository:b:pull"),
                           ("error", "insufficient_scope"))),)),
    ('Basic realm="x", Bearer realm="https://t",service=s',
     (Challenge("basic", (("realm", "x"),)), Challenge("bearer", (("realm", "https://t"), ("service", "s"))))),
    ('Bearer realm="a\\"b"', (Challenge("bearer", (("realm", 'a"b'),)),)),
    ("", ()),
], ids=["basic", "bearer-hub", "bearer-two-scopes", "two-challenges", "escaped-quote", "empty"])
def test_parse_challenges(header: str, expected: tuple) -> None:  # type: ignore[type-arg]
    assert parse_challenges(header) == expected


def test_token_request_anonymous_basic_and_refresh_token() -> None:
    challenge = Challenge("bearer", (("realm", "https://auth.example/token"), ("service", "reg"),
                                     ("scope", "repository:a:pull")))
    method, url, headers, body = token_request(challenge, ("repository:a:pull", "repository:b:pull,push"), None)
    assert (method, headers, body) == ("GET", {}, None)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query == {"service": ["reg"], "scope": ["repository:a:pull", "repository:b:pull,push"]}

    method, url, headers, body = token_request(challenge, (), Credentials("u", "p"))
    assert headers == {"Authorization": "Basic " + _b64("u:p")} and "account=u" in url

    method, url, headers, body = token_request(challenge, (), Credentials(identity_token="rt"))
    assert method == "POST" and url == "https://auth.example/token" and body is not None
    form = urllib.parse.parse_qs(body.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["rt"] and form["service"] == ["reg"]

    with pytest.raises(AuthError, match="names no realm"):
        token_request(Challenge("bearer"), (), None)


def test_parse_token_response() -> None:
    assert parse_token_response(b'{"token":"t1","expires_in":300}', "r") == ("t1", 300.0)
    assert parse_token_response(b'{"access_token":"t2"}', "r") == ("t2", None)
    with pytest.raises(AuthError, match="token endpoint r answered JSON without a token"):
        parse_token_response(b'{"nope":1}', "r")
    with pytest.raises(AuthError, match="answered no JSON"):
        parse_token_response(b"<html>", "r")


def test_merge_scopes_unions_actions_per_repository() -> None:
    assert merge_scopes(("repository:a:pull", "repository:a:pull,push", "repository:b:pull", "registry:catalog:*")) == (
        "repository:a:pull,push", "repository:b:pull", "registry:catalog:*")
    assert merge_scopes(("repository:host:5000/x:pull",)) == ("repository:host:5000/x:pull",)


def test_merge_scopes_orders_actions_canonically() -> None:
    # distribution's challenge says "push,pull" or "pull,push" from one request to the next
    assert merge_scopes(("repository:a:push,pull",)) == ("repository:a:pull,push",)
    assert merge_scopes(("repository:a:push", "repository:a:pull")) == ("repository:a:pull,push",)
    assert merge_scopes(("repository:a:*,delete,push,pull",)) == ("repository:a:pull,push,delete,*",)


_DEEP = b"[" * 5000 + b"]" * 5000


def test_json_nested_too_deeply_is_an_auth_error() -> None:  # found by lamina_fuzz (RecursionError)
    from lamina.registry.auth import parse_helper_output, parse_token_response
    from lamina.registry.errors import AuthError

    for read in (lambda: parse_docker_config(_DEEP, "config.json"), lambda: parse_helper_output(_DEEP, "pass"),
                 lambda: parse_token_response(_DEEP, "https://auth/token")):
        with pytest.raises(AuthError, match="recursion"):
            read()


def test_credentials_that_are_not_utf8_are_an_auth_error() -> None:  # found by lamina_fuzz (UnicodeEncodeError)
    from lamina.registry.auth import parse_helper_output
    from lamina.registry.errors import AuthError

    with pytest.raises(AuthError, match=r"auths\['r.test'\]: username is not valid UTF-8"):
        parse_docker_config(b'{"auths": {"r.test": {"username": "\\udcff", "password": "p"}}}', "config.json")
    with pytest.raises(AuthError, match="Secret is not valid UTF-8"):
        parse_helper_output(b'{"Username": "u", "Secret": "\\ud800"}', "pass")
