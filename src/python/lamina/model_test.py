"""Tests of the value types: platforms, media types, descriptors, digests and canonical JSON."""
from __future__ import annotations

import pytest

from lamina.errors import InvalidSource
from lamina.model import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    Descriptor,
    Platform,
    canonical_json,
    check_digest,
    layer_compression,
    oci_layer_media_type,
    parse_json,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
    ids=["os-arch", "variant", "windows"],
)
def test_platform_parse_round_trips(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(Platform.parse(text)) == text


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""], ids=["no-arch", "empty-arch", "no-os", "too-many", "empty"])
def test_platform_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="is not a platform; write os/arch"):
        Platform.parse(text)


def test_platform_arm64_v8_is_the_default_arm64_variant() -> None:
    assert Platform.parse("linux/arm64/v8").matches(Platform.parse("linux/arm64"))
    assert Platform.parse("linux/arm64").matches(Platform.parse("linux/arm64/v8"))
    assert not Platform.parse("linux/amd64").matches(Platform.parse("linux/arm64"))


def test_a_platform_without_variant_takes_any_preferring_the_default_one() -> None:
    arm = Platform.parse("linux/arm")
    assert arm.matches(Platform.parse("linux/arm/v7")) and arm.matches(Platform.parse("linux/arm/v6"))
    assert Platform.parse("linux/arm/v7").matches(arm)  # an image naming no variant is the default one
    assert not Platform.parse("linux/arm/v6").matches(arm)
    assert Platform("linux", "arm", "7").matches(Platform.parse("linux/arm/v7"))
    found = [Platform.parse(t) for t in ("linux/arm/v6", "linux/arm/v7", "linux/arm64/v8", "linux/amd64")]
    assert arm.best(found) == [1]
    assert Platform.parse("linux/arm/v6").best(found) == [0]
    assert Platform.parse("linux/arm64").best(found) == [2]
    assert Platform.parse("linux/riscv64").best(found) == []
    v2, v3 = Platform("linux", "amd64", "v2"), Platform("linux", "amd64", "v3")
    assert Platform.parse("linux/amd64").best([v2, v3]) == [0, 1]  # no default: both, so the caller asks


def test_platform_of_config_reads_os_architecture_variant() -> None:
    assert Platform.of_config({"os": "linux", "architecture": "arm", "variant": "v6"}) == Platform("linux", "arm", "v6")
    assert Platform.of_config({}) == Platform("", "")


@pytest.mark.parametrize(
    "media_type, compression, oci",
    [
        (OCI_LAYER, "none", OCI_LAYER),
        (OCI_LAYER_GZIP, "gzip", OCI_LAYER_GZIP),
        (OCI_LAYER_ZSTD, "zstd", OCI_LAYER_ZSTD),
        (DOCKER_LAYER, "none", OCI_LAYER),
        (DOCKER_LAYER_GZIP, "gzip", OCI_LAYER_GZIP),
        (OCI_LAYER_GZIP + ".nondistributable", "gzip", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar", "none",
         "application/vnd.oci.image.layer.nondistributable.v1.tar"),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip",
         "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
    ],
    ids=["oci", "oci-gzip", "oci-zstd", "docker", "docker-gzip", "nondistributable-suffix", "oci-nondistributable",
         "docker-foreign"],
)
def test_layer_media_types_map_to_compression_and_oci_type(media_type: str, compression: str, oci: str) -> None:
    assert layer_compression(media_type) == compression
    assert oci_layer_media_type(media_type) == oci


def test_unknown_layer_media_type_is_invalid_source() -> None:
    with pytest.raises(InvalidSource, match="unknown layer media type 'application/x-lz4'"):
        layer_compression("application/x-lz4")
    with pytest.raises(InvalidSource):
        oci_layer_media_type("application/x-lz4")


def test_descriptor_json_round_trip_sorts_annotations() -> None:
    value = {"mediaType": OCI_LAYER, "digest": DIGEST, "size": 3, "annotations": {"b": "2", "a": "1"}}
    d = Descriptor.from_json(value, "here")
    assert d.annotations == (("a", "1"), ("b", "2"))
    assert d.to_json() == value
    assert d.hex == "ab" * 32
    assert d.with_annotations({"a": "x", "c": "3"}).annotations == (("a", "x"), ("b", "2"), ("c", "3"))


def test_descriptor_urls_round_trip_and_are_checked() -> None:
    value = {"mediaType": OCI_LAYER, "digest": DIGEST, "size": 3, "urls": ["https://example.invalid/b"]}
    d = Descriptor.from_json(value, "here")
    assert d.urls == ("https://example.invalid/b",) and d.to_json() == value
    assert d.with_annotations({"a": "1"}).urls == d.urls and d.as_oci_layer().urls == d.urls
    with pytest.raises(InvalidSource, match="here: descriptor urls 'x' is not a list of strings"):
        Descriptor.from_json({**value, "urls": "x"}, "here")


@pytest.mark.parametrize(
    "value, message",
    [
        ({"mediaType": OCI_LAYER, "digest": DIGEST, "size": -1}, "size -1 is not a non-negative integer"),
        ({"mediaType": OCI_LAYER, "digest": DIGEST, "size": True}, "size True"),
        ({"mediaType": OCI_LAYER, "digest": DIGEST, "size": "3"}, "size '3'"),
        ({"digest": DIGEST, "size": 3}, "descriptor has no mediaType"),
        ({"mediaType": OCI_LAYER, "digest": "sha256:AB", "size": 3}, "is not a sha256 digest"),
        ({"mediaType": OCI_LAYER, "digest": "md5:" + "a" * 32, "size": 3}, "is not a sha256 digest"),
        ([1, 2], "expected a JSON object, found list"),
    ],
    ids=["negative-size", "bool-size", "string-size", "no-media-type", "short-digest", "other-algorithm", "not-object"],
)
def test_descriptor_from_json_rejects_malformed(value: object, message: str) -> None:
    with pytest.raises(InvalidSource, match="^here: .*" + message.replace("(", r"\(")):
        Descriptor.from_json(value, "here")


def test_check_digest_accepts_only_lowercase_sha256() -> None:
    assert check_digest(DIGEST, "x") == DIGEST
    with pytest.raises(InvalidSource, match="x: 'sha256:" + "AB" * 32):
        check_digest("sha256:" + "AB" * 32, "x")


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": [1, {"d": 1, "c": "é"}], "a": None}) == '{"a":null,"b":[1,{"c":"é","d":1}]}'.encode()


def test_parse_json_names_where_on_malformed_input() -> None:
    assert parse_json(b'{"a": 1}', "f") == {"a": 1}
    with pytest.raises(InvalidSource, match=r"^cfg\.json: malformed JSON"):
        parse_json(b"{", "cfg.json")
    with pytest.raises(InvalidSource, match="malformed JSON"):
        parse_json(b"\xff\xfe{", "bytes")


def test_json_nested_too_deeply_is_invalid_source_in_one_line() -> None:  # found by lamina_fuzz (RecursionError)
    with pytest.raises(InvalidSource, match=r"^manifest\.json: JSON nested too deeply to read$"):
        parse_json(b"[" * 5000 + b"]" * 5000, "manifest.json")


def test_a_digest_with_a_trailing_newline_is_not_a_digest() -> None:  # found by lamina_fuzz ($ matched before it)
    with pytest.raises(InvalidSource, match="is not a sha256 digest"):
        check_digest("sha256:" + "a" * 64 + "\n", "index.json")


def test_platform_slug_names_the_platform_in_a_file_name() -> None:
    assert Platform.parse("linux/arm64/v8").slug() == "linux-arm64-v8"
    assert Platform.parse("linux/amd64").slug() == "linux-amd64"
