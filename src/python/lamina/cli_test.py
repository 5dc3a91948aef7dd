"""Tests of the command line: layers, extract and compose output, one-line errors with exit status 2."""
from __future__ import annotations

import json
import os
import re
import tarfile

import pytest

from lamina.cli import main
from lamina.extract import SELECTION_FILE
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing import hostile
from lamina_testing.images import FakeImage, FakeLayer, leftovers, sha, write_docker_classic, write_oci_dir

FAKE = FakeImage(
    [
        FakeLayer({"etc/": None, "etc/os-release": b"ID=fake\n", "etc/alias": "->os-release"}, "ADD rootfs /"),
        FakeLayer({"usr/bin/jq": b"jq" * 500}, "RUN apk add jq", "gzip"),
        FakeLayer({"usr/bin/yq": b"yq"}, "RUN apk add yq\n&& clean", "zstd"),
    ],
    empty_history=[(1, "ENV A=1")],
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def src(tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "saved.tar")
    write_docker_classic({"tools:1": FAKE}, path)
    return path


def test_layers_text(capsys, src: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, err = _run(capsys, "layers", src)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{src}  platform linux/amd64  3 layers"
    assert len(lines) == 4
    for i, (line, layer) in enumerate(zip(lines[1:], FAKE.layers)):
        assert re.match(rf"^\s+{i}  {sha(layer.blob)[:19]}  diff_id {sha(layer.tar)[:19]}\s+{len(layer.blob)}  ", line), line
    assert lines[2].endswith("RUN apk add jq")
    assert lines[3].endswith("RUN apk add yq && clean")  # one line per layer


def test_layers_json(capsys, src: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = _run(capsys, "layers", "--json", "docker-archive:" + src)
    data = json.loads(out)
    assert rc == 0 and data["source"] == "docker-archive:" + src and data["platform"] == "linux/amd64"
    assert data["layers"][1] == {
        "index": 1, "digest": sha(FAKE.layers[1].blob), "diff_id": sha(FAKE.layers[1].tar),
        "size": len(FAKE.layers[1].blob), "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
        "created_by": "RUN apk add jq",
    }


def test_layers_marks_the_selected_layers(capsys, src: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = _run(capsys, "layers", src, "--select=created_by=apk add jq")
    lines = out.splitlines()
    assert rc == 0 and lines[0].endswith("3 layers  (* = selected by layer=created_by=apk add jq)")
    assert [line[:4] for line in lines[1:]] == ["  0 ", "  1*", "  2 "]
    rc, out, _ = _run(capsys, "layers", "--json", src, "--select=1:")
    assert [l["selected"] for l in json.loads(out)["layers"]] == [False, True, True]
    rc, out, err = _run(capsys, "layers", src, "--select=created_by=no-such")
    assert rc != 0 and "matches no layer" in err and err.count("\n") == 1


def test_layers_files(capsys, src: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = _run(capsys, "layers", "--json", "--files", src)
    assert rc == 0
    assert [l["files"] for l in json.loads(out)["layers"]] == [
        ["etc/", "etc/alias -> os-release", "etc/os-release"], ["usr/bin/jq"], ["usr/bin/yq"]]
    rc, out, _ = _run(capsys, "layers", "--files", src)
    assert "\n       etc/alias -> os-release\n" in out


def test_extract_writes_a_bundle(capsys, tmp_path, src: str) -> None:  # type: ignore[no-untyped-def]
    out_dir = str(tmp_path / "bundle")
    rc, out, err = _run(capsys, "extract", src, "--layer", "created_by=jq", "--out", out_dir, "--name", "//tools")
    assert (rc, err) == (0, "")
    printed = json.loads(out)
    assert (printed["source"], printed["selector"], [l["index"] for l in printed["layers"]]) == ("//tools", "created_by=jq", [1])
    with open(os.path.join(out_dir, SELECTION_FILE)) as f:
        assert json.load(f) == printed
    image = open_image("oci:" + out_dir)
    assert image.diff_ids == tuple(sha(l.tar) for l in FAKE.layers)
    assert [l.opener is not None for l in image.layers] == [False, True, False]
    rc, out, _ = _run(capsys, "layers", "--json", "--files", "oci:" + out_dir)
    assert [("files" in l) for l in json.loads(out)["layers"]] == [False, True, False]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci", "oci-archive"])
def test_compose_from_extracted_bundles(capsys, tmp_path, src: str, fmt: str) -> None:  # type: ignore[no-untyped-def]
    base_src = str(tmp_path / "base")
    write_oci_dir(FakeImage([FakeLayer({"bin/sh": b"sh"}, "ADD sh /")]), base_src)
    base, jq, yq = (str(tmp_path / n) for n in ("b-base", "b-jq", "b-yq"))
    assert _run(capsys, "extract", "oci:" + base_src, "--layer", ":", "--out", base)[0] == 0
    assert _run(capsys, "extract", src, "--layer", "path=/usr/bin/jq", "--out", jq)[0] == 0
    assert _run(capsys, "extract", src, "--layer", "-1", "--out", yq)[0] == 0
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": base, "layers": [{"source": jq}, {"source": yq}], "tags": ["app:1"],
                                "config": {"entrypoint": ["/usr/bin/jq"]}}))
    out = str(tmp_path / "image")
    rc, stdout, err = _run(capsys, "compose", str(spec), "--out", out, "--format", fmt)
    assert (rc, err) == (0, "")
    summary = json.loads(stdout)
    image = open_image(out)
    assert summary == {"manifest": summary["manifest"], "config": image.config_descriptor.digest, "layers": 3, "out": out}
    if fmt == "oci":
        with open(os.path.join(out, "index.json")) as f:
            index = json.load(f)
    else:
        with tarfile.open(out) as tf:
            index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
    assert [e["digest"] for e in index["manifests"]] == [summary["manifest"]]
    assert image.diff_ids == (sha(FakeLayer({"bin/sh": b"sh"}).tar), sha(FAKE.layers[1].tar), sha(FAKE.layers[2].tar))
    assert image.config["config"]["Entrypoint"] == ["/usr/bin/jq"] and "Cmd" not in image.config["config"]
    assert validate(image).layers == 3
    rc, stdout, _ = _run(capsys, "validate", out)
    assert rc == 0 and stdout == f"{out}: ok, 3 layers, {sum(l.descriptor.size for l in image.layers)} bytes verified\n"


def _assert_one_line_error(rc: int, out: str, err: str, pattern: str) -> None:
    assert rc == 2
    assert out == ""
    assert err.startswith("lamina: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("case", hostile.CASES, ids=[c.id for c in hostile.CASES])
def test_hostile_input_is_one_error_line(capsys, tmp_path, case: hostile.Case) -> None:  # type: ignore[no-untyped-def]
    source = case.build(str(tmp_path))
    platform = ["--platform", case.platform] if case.platform else []
    out = tmp_path / "out" / "bundle"
    _assert_one_line_error(*_run(capsys, "extract", source, "--layer", ":", "--out", str(out), *platform), case.message)
    assert not out.exists() and (not out.parent.exists() or leftovers(str(out.parent)) == [])
    _assert_one_line_error(*_run(capsys, "validate", source, *platform), case.message)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"platform": case.platform or "linux/amd64", "layers": [{"source": source, "layer": ":"}]}))
    image = tmp_path / "out" / "image.tar"
    _assert_one_line_error(*_run(capsys, "compose", str(spec), "--out", str(image)), case.message)
    assert not image.exists() and (not image.parent.exists() or leftovers(str(image.parent)) == [])


def test_other_errors_are_one_line(capsys, tmp_path, src: str) -> None:  # type: ignore[no-untyped-def]
    _assert_one_line_error(*_run(capsys, "extract", src, "--layer", "created_by=apk", "--out", str(tmp_path / "o")),
                           r"matches 2 layers \(\[1\] .*; \[2\] .*RUN apk add yq && clean\)")
    _assert_one_line_error(*_run(capsys, "layers", src, "--platform", "amd64"), "'amd64' is not a platform")
    _assert_one_line_error(*_run(capsys, "layers", str(tmp_path / "missing.tar")), "no such file or directory")
    _assert_one_line_error(*_run(capsys, "compose", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")),
                           "No such file or directory: .*nope.json")
    spec = tmp_path / "list.json"
    spec.write_text("[]")
    _assert_one_line_error(*_run(capsys, "compose", str(spec), "--out", str(tmp_path / "o"), "--format", "oci"),
                           "a compose spec is a JSON object")
    spec.write_text("{")
    _assert_one_line_error(*_run(capsys, "compose", str(spec), "--out", str(tmp_path / "o")), "list.json: malformed JSON")
    assert not (tmp_path / "o").exists()


def test_usage_errors_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as e:
        main(["extract", "x.tar"])
    assert e.value.code == 2
    assert "--layer" in capsys.readouterr().err


def test_extract_says_nothing_of_downloads_for_a_source_that_is_no_registry(capsys, src, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = _run(capsys, "extract", src, "--layer", "-1", "--out", str(tmp_path / "o"))
    assert rc == 0 and "downloaded" not in json.loads(out)


def test_resolve_of_something_that_is_no_reference_is_a_one_line_error(capsys) -> None:  # type: ignore[no-untyped-def]
    _assert_one_line_error(*_run(capsys, "resolve", "docker://127.0.0.1:5000/Team/App:1"), "is not valid")
