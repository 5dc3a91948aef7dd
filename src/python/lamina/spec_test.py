"""Tests of the compose spec: a full spec, defaults and malformed specs."""
from __future__ import annotations

import pytest

from lamina.compose import ConfigOverrides
from lamina.errors import SpecError
from lamina.model import Platform
from lamina.spec import FileSpec, LayerSpec, parse_spec


def test_full_spec_parses() -> None:
    spec = parse_spec({
        "base": {"source": "oci:base", "name": "//:base"},
        "platform": "linux/arm64/v8",
        "layers": ["bundle-a", {"source": "docker-archive:x.tar:app", "layer": -1}, {"source": "b", "layer": "1:"}],
        "files": [{"src": "local/f", "dest": "/etc/f"}],
        "file_dirs": [{"src": "site"}],
        "config": {"env": {"A": "1"}, "entrypoint": ["/e"], "cmd": ["c"], "workdir": "/w", "user": "u",
                   "labels": {"l": "v"}, "exposed_ports": ["80"], "volumes": ["/v"], "stop_signal": "SIGTERM"},
        "tags": ["app:1"],
        "format": "oci",
        "allow_platform_mismatch": True,
        "target": "//images:app",
    })
    assert spec.base is not None and (spec.base.source, spec.base.layer, spec.base.name) == ("oci:base", None, "//:base")
    assert spec.platform == Platform("linux", "arm64", "v8")
    assert [(l.source, l.layer, l.name) for l in spec.layers] == [
        ("bundle-a", None, None), ("docker-archive:x.tar:app", "-1", None), ("b", "1:", None)]
    assert spec.files == (FileSpec("local/f", "/etc/f"),)
    assert spec.file_dirs == (FileSpec("site", "/"),)
    assert spec.config == ConfigOverrides(env=(("A", "1"),), entrypoint=("/e",), cmd=("c",), workdir="/w", user="u",
                                          labels=(("l", "v"),), exposed_ports=("80",), volumes=("/v",),
                                          stop_signal="SIGTERM")
    assert (spec.tags, spec.format, spec.allow_platform_mismatch) == (("app:1",), "oci", True)
    assert spec.target == "//images:app"


def test_defaults() -> None:
    spec = parse_spec({"platform": "linux/amd64"})
    assert spec.base is None and spec.layers == () and spec.files == ()
    assert spec.config == ConfigOverrides()
    assert (spec.format, spec.allow_platform_mismatch, spec.tags) == ("docker-archive", False, ())
    assert parse_spec({"base": "oci:x"}).base == LayerSpec("oci:x", None, None)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "a compose spec is a JSON object"),
        ({"platform": "linux/amd64", "bases": "x"}, r"unknown spec keys \['bases'\]"),
        ({}, "a scratch base needs a platform"),
        ({"platform": "amd64"}, "'amd64' is not a platform"),
        ({"platform": 5}, "platform must be a string"),
        ({"base": 3}, "base must be an object with a source"),
        ({"base": {"layer": "1"}}, "base must be an object with a source"),
        ({"base": "b", "layers": "x"}, "layers must be a list"),
        ({"base": "b", "layers": [{"source": "s", "layer": 1.5}]}, r"layers\[0\].layer must be a selector string or an index"),
        ({"base": "b", "layers": [{"source": 1}]}, r"layers\[0\].source must be a string"),
        ({"base": "b", "config": []}, "config must be an object"),
        ({"base": "b", "config": {"Env": {}}}, r"unknown config keys \['Env'\]"),
        ({"base": "b", "config": {"env": {"A": 1}}}, "config.env must be an object of strings"),
        ({"base": "b", "config": {"cmd": "ls"}}, "config.cmd must be a list of strings"),
        ({"base": "b", "config": {"user": 0}}, "config.user must be a string"),
        ({"base": "b", "files": {}}, "files must be a list"),
        ({"base": "b", "files": ["f"]}, r"files\[0\] must be an object with src and dest"),
        ({"base": "b", "files": [{"dest": "/x"}]}, r"files\[0\].src must be a string"),
        ({"base": "b", "format": "tar"}, "format 'tar' is not one of docker-archive, oci, oci-archive"),
        ({"base": "b", "allow_platform_mismatch": "yes"}, "allow_platform_mismatch must be true or false"),
        ({"base": "b", "tags": "app"}, "tags must be a list of strings"),
    ],
    ids=["not-object", "unknown-key", "scratch-no-platform", "bad-platform", "platform-type", "base-type",
         "base-no-source", "layers-type", "selector-type", "source-type", "config-type", "config-key", "env-values",
         "cmd-string", "user-type", "files-type", "file-entry", "file-src", "format", "allow-type", "tags-type"],
)
def test_malformed_specs(data: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(data)
