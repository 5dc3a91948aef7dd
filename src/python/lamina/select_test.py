"""Tests of the layer selectors: index, slice, digest prefix, created_by and path, and their errors."""
from __future__ import annotations

import itertools

import pytest

from lamina.errors import SelectorError
from lamina.image import Image
from lamina.select import Selector, describe, parse_selector, select
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, sha, write_oci_dir

# Four layers; ENV/CMD/ENTRYPOINT entries in the history make no layer of their own.
FAKE = FakeImage(
    [
        FakeLayer({"etc/": None, "etc/os-release": b"ID=fake\n"}, "ADD rootfs.tar /", "none"),
        FakeLayer({"usr/bin/": None, "usr/bin/tool": b"tool v1"}, "RUN apt-get install -y tool", "gzip"),
        FakeLayer({"app/": None, "app/main.py": b"print()"}, "COPY app /app", "gzip"),
        FakeLayer({"usr/bin/tool": b"tool v2", "usr/bin/.wh.old": b""}, "RUN pip install tool", "zstd"),
    ],
    empty_history=[(1, "ENV LANG=C.UTF-8"), (2, 'CMD ["sh"]'), (2, "ENV APP=/app"), (4, "ENTRYPOINT [\"tool\"]")],
)


@pytest.fixture
def image(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    write_oci_dir(FAKE, str(tmp_path / "img"))
    return open_image(str(tmp_path / "img"))


def _picked(image: Image, raw: object) -> list[int]:
    return [l.index for l in select(image, parse_selector(raw))]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw, expected",
    [("0", [0]), ("2", [2]), ("-1", [3]), (" -4 ", [0]), (1, [1]), ("003", [3])],
    ids=["base", "middle", "top", "negative-first", "int", "leading-zeros"],
)
def test_index(image: Image, raw: object, expected: list[int]) -> None:
    assert _picked(image, raw) == expected


@pytest.mark.parametrize("raw", ["4", "-5", "99"])
def test_index_out_of_range_lists_candidates(image: Image, raw: str) -> None:
    with pytest.raises(SelectorError) as e:
        _picked(image, raw)
    message = str(e.value)
    assert "index out of range, the image has 4 layers" in message
    for layer in image.layers:
        assert describe(layer) in message
    assert "[1] " + image.layers[1].descriptor.digest[:19] + " RUN apt-get install -y tool" in message


@pytest.mark.parametrize(
    "raw, expected",
    [("2:", [2, 3]), ("1:3", [1, 2]), (":", [0, 1, 2, 3]), (":-1", [0, 1, 2]), ("-2:", [2, 3]), (":1", [0])],
    ids=["from", "range", "all", "all-but-top", "negative-from", "to"],
)
def test_slice(image: Image, raw: str, expected: list[int]) -> None:
    assert _picked(image, raw) == expected


def test_empty_slice_is_an_error(image: Image) -> None:
    with pytest.raises(SelectorError, match=r"layer selector 3:1: slice selects no layer, the image has 4 layers: \[0\]"):
        _picked(image, "3:1")


def test_digest_prefix_matches_digest_or_diff_id(image: Image) -> None:
    gz = image.layers[1]
    assert gz.descriptor.digest != gz.diff_id
    assert _picked(image, gz.descriptor.digest) == [1]
    assert _picked(image, gz.descriptor.digest[:20]) == [1]
    assert _picked(image, gz.diff_id[:20]) == [1]
    assert _picked(image, image.layers[3].diff_id) == [3]


def test_digest_with_no_match_lists_candidates(image: Image) -> None:
    taken = {l.descriptor.digest[7:9] for l in image.layers} | {l.diff_id[7:9] for l in image.layers}
    free = next(a + b for a, b in itertools.product("0123456789abcdef", repeat=2) if a + b not in taken)
    with pytest.raises(SelectorError, match=rf"sha256:{free}: matches no layer; candidates: \[0\] .*; \[3\] "):
        _picked(image, "sha256:" + free)


def test_ambiguous_digest_prefix_names_the_layers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    by_first: dict[str, FakeLayer] = {}
    for k in itertools.count():  # two layers whose digests share their first hex digit
        layer = FakeLayer({"f": str(k).encode()}, f"RUN {k}")
        first = sha(layer.blob)[7]
        if first in by_first:
            break
        by_first[first] = layer
    write_oci_dir(FakeImage([by_first[first], layer]), str(tmp_path / "img"))
    image = open_image(str(tmp_path / "img"))
    with pytest.raises(SelectorError) as e:
        _picked(image, "sha256:" + first)
    assert f"matches 2 layers ({describe(image.layers[0])}; {describe(image.layers[1])})" in str(e.value)
    assert "make it more specific or use an index" in str(e.value)


@pytest.mark.parametrize(
    "pattern, expected",
    [("apt-get", [1]), ("^COPY", [2]), ("pip install", [3]), (r"rootfs\.tar", [0])],
    ids=["apt", "copy", "pip", "base"],
)
def test_created_by_maps_history_onto_layers(image: Image, pattern: str, expected: list[int]) -> None:
    assert _picked(image, "created_by=" + pattern) == expected


@pytest.mark.parametrize("pattern", ["ENV", "CMD", "ENTRYPOINT", "LANG"])
def test_created_by_never_matches_empty_history_entries(image: Image, pattern: str) -> None:
    with pytest.raises(SelectorError, match=f"created_by={pattern}: matches no layer; candidates: "):
        _picked(image, "created_by=" + pattern)


def test_created_by_matching_several_layers_is_an_error(image: Image) -> None:
    with pytest.raises(SelectorError, match=r"created_by=RUN: matches 2 layers \(\[1\] .*apt-get.*; \[3\] .*pip"):
        _picked(image, "created_by=RUN")


def test_created_by_needs_history_that_maps_onto_layers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeImage([FakeLayer({"a": b"a"}), FakeLayer({"b": b"b"})], config_extra={"history": [{"created_by": "x"}]})
    write_oci_dir(fake, str(tmp_path / "img"))
    with pytest.raises(SelectorError, match="history does not map onto its layers, so created_by cannot be used"):
        _picked(open_image(str(tmp_path / "img")), "created_by=x")
    assert _picked(open_image(str(tmp_path / "img")), "-1") == [1]  # other selectors still work


@pytest.mark.parametrize("path", ["/app/main.py", "app/main.py", "//app/./main.py"], ids=["absolute", "relative", "unnormalized"])
def test_path_finds_the_layer_adding_a_file(image: Image, path: str) -> None:
    assert _picked(image, "path=" + path) == [2]


def test_path_errors(image: Image) -> None:
    with pytest.raises(SelectorError, match=r"path=/usr/bin/tool: matches 2 layers \(\[1\] .*; \[3\] "):
        _picked(image, "path=/usr/bin/tool")
    with pytest.raises(SelectorError, match="path=/app: matches no layer"):  # directories do not count
        _picked(image, "path=/app")
    with pytest.raises(SelectorError, match="path=/usr/bin/.wh.old: matches no layer"):  # nor whiteouts
        _picked(image, "path=/usr/bin/.wh.old")


@pytest.mark.parametrize(
    "raw, message",
    [
        ("latest", "is not valid; use an index"),
        ("1:2:3", "is not valid"),
        ("", "is not valid"),
        (True, "is not valid"),
        ("sha256:XYZ", "a digest prefix is sha256: and 1-64 lowercase hex digits"),
        ("sha256:", "a digest prefix is sha256:"),
        ("sha256:" + "a" * 65, "a digest prefix is sha256:"),
        ("created_by=(", "bad regular expression"),
        ("path=", "path= needs a file path"),
        ("path=/", "path= needs a file path"),
    ],
    ids=["word", "step-slice", "empty", "bool", "hex-case", "no-hex", "too-long", "bad-regex", "empty-path", "root-path"],
)
def test_malformed_selectors(raw: object, message: str) -> None:
    with pytest.raises(SelectorError, match=message.replace("(", r"\(")):
        parse_selector(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw, kind", [("-1", "index"), ("1:", "slice"), ("sha256:ab", "digest"), ("created_by=RUN x", "created_by"), ("path=/a", "path")]
)
def test_selector_text_round_trips(raw: str, kind: str) -> None:
    selector = parse_selector(raw)
    assert selector.kind == kind
    assert parse_selector(str(selector)) == selector == Selector(kind, selector.value)
