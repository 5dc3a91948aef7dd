"""Tests of the analysis commands of the CLI: scan, check, layers --conflicts and files-layer."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lamina.analyze.index import read_index
from lamina.cli import main
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, write_docker_oci, write_oci_dir

BASE = FakeLayer({"bin/": None, "bin/sh": b"sh"}, "ADD rootfs /")
DPKG = {"var/": None, "var/lib/": None, "var/lib/dpkg/": None}
A = FakeImage([BASE, FakeLayer({**DPKG, "var/lib/dpkg/status": b"Package: a\n"}, "RUN apt-get install a")])
B = FakeImage([BASE, FakeLayer({**DPKG, "var/lib/dpkg/status": b"Package: b\n", "link": "=>gone"},
                               "RUN apt-get install b")])


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def indexes(tmp_path: Path, capsys: pytest.CaptureFixture) -> dict[str, str]:
    write_oci_dir(A, str(tmp_path / "a"))
    write_docker_oci(B, "b:1", str(tmp_path / "b.tar"))
    out = {}
    for name, argv in (("base", [str(tmp_path / "a"), "--layer", "0"]), ("a", [str(tmp_path / "a"), "--layer", "-1"]),
                       ("b", [f"docker-archive:{tmp_path / 'b.tar'}", "--layer", "1", "--name", "b.tar"])):
        path = str(tmp_path / f"{name}.json")
        rc, stdout, _ = _run(capsys, "scan", *argv, "--out", path)
        assert rc == 0
        summary = json.loads(stdout)
        assert summary["out"] == path and summary["skipped"] == [] and len(summary["layers"]) == 1
        out[name] = path
    return out


def test_scan_writes_one_index_per_call(indexes: dict[str, str]) -> None:
    (b,) = read_index(indexes["b"])
    assert (b.source, b.index) == ("b.tar", 1)
    assert {e.path for e in b.entries} >= {"var/lib/dpkg/status", "link"}


def test_check_reports_and_exits_2_on_a_broken_hard_link(indexes: dict[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    report = tmp_path / "report.json"
    rc, out, err = _run(capsys, "check", "--index", indexes["base"], "--index", indexes["a"], "--index", indexes["b"],
                        "--json", str(report))
    assert rc == 2
    err_lines = err.splitlines()
    assert err_lines[0] == "lamina: error: composition check failed: 1 broken hard link:"
    assert len(err_lines) == 2 and err_lines[1].startswith("  error: hard link /link in [2] b.tar layer 1 (sha256:")
    assert "points to /gone" in err_lines[1]
    lines = out.splitlines()
    assert lines[lines.index("conflicts (1):") + 1].startswith("  warning: /var/lib/dpkg/status differs (content)")
    assert "hard links (1):" in lines and "whiteouts: none" in lines and "missing libraries: none" in lines
    doc = json.loads(report.read_text())
    assert doc["counts"]["conflict"] == 1 and doc["errors"] == 1


def test_check_policy_options(indexes: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    stack = ["--index", indexes["base"], "--index", indexes["a"]]
    ok = _run(capsys, "check", *stack)
    assert ok[0] == 0 and "conflicts: none" in ok[1]
    b = ["--index", indexes["base"], "--index", indexes["a"], "--index", indexes["b"]]
    rc, _, err = _run(capsys, "check", *b, "--on-conflict", "error", "--allow", "/link")
    assert rc == 2 and "1 conflict, 1 broken hard link" in err
    rc, out, _ = _run(capsys, "check", *b, "--on-conflict", "ignore", "--no-check-dependencies")
    assert rc == 2 and "conflicts: none" in out
    rc, out, _ = _run(capsys, "check", *b, "--allow", "var/lib/dpkg/*", "--allow", "x")
    assert "conflicts: none" in out


def test_check_refuses_a_file_that_is_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.json").write_text("{}")
    rc, _, err = _run(capsys, "check", "--index", str(tmp_path / "x.json"))
    assert rc == 2 and err.startswith("lamina: error: ") and "lamina scan" in err


def test_layers_conflicts_on_a_composed_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    history = [{"created_by": "ADD rootfs /"}]
    for name, layer in (("a.tar", A.layers[1]), ("b.tar", B.layers[1])):
        history.append({"created_by": layer.created_by, "comment": f"lamina: layer sha256:00 from {name} (-1)"})
    composed = FakeImage([BASE, A.layers[1], FakeLayer({**DPKG, "var/lib/dpkg/status": b"Package: b\n"}, "b")],
                         config_extra={"history": history})
    write_oci_dir(composed, str(tmp_path / "c"))
    rc, out, _ = _run(capsys, "layers", str(tmp_path / "c"), "--conflicts")
    assert rc == 0
    lines = out.splitlines()
    assert lines[4] == "conflicts (1):" and "/var/lib/dpkg/status differs (content) between [1]" in lines[5]
    rc, out, _ = _run(capsys, "layers", str(tmp_path / "c"), "--conflicts", "--json")
    (finding,) = json.loads(out)["conflicts"]
    assert finding["paths"] == ["var/lib/dpkg/status"] and finding["layers"] == [1, 2] and finding["winner"] == 2


def test_files_layer_makes_the_layer_once_for_compose_and_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lamina_testing.elffiles import make_elf

    (tmp_path / "app").write_bytes(make_elf(type="exec", interp="/lib/ld.so", needed=["libfoo.so.1"]))
    (tmp_path / "files.json").write_text(json.dumps({"files": [{"src": str(tmp_path / "app"), "dest": "/bin/app"}]}))
    write_oci_dir(FakeImage([FakeLayer({"lib/": None, "lib/ld.so": make_elf(soname="ld.so")}, "ADD loader")]),
                  str(tmp_path / "base"))
    rc, out, _ = _run(capsys, "files-layer", str(tmp_path / "files.json"), "--out", str(tmp_path / "fl"),
                      "--name", "files of //:img")
    assert rc == 0, out
    made = json.loads(out)
    assert sorted(os.listdir(tmp_path / "fl")) == ["files-layer.json", "files-layer.tar.gz", "index.json"]

    (index,) = read_index(str(tmp_path / "fl" / "index.json"))
    assert (index.digest, index.on_top, len(index.entries)) == (made["digest"], True, 2)  # bin/ and bin/app
    # check reads it on top of the base's scan
    base = str(tmp_path / "base.json")
    assert _run(capsys, "scan", str(tmp_path / "base"), "--out", base)[0] == 0
    rc, out, _ = _run(capsys, "check", "--index", base, "--index", str(tmp_path / "fl" / "index.json"))
    assert rc == 0 and "  warning: /bin/app from [1] files of //:img" in out and "libfoo.so.1" in out, out
    assert f"  [1] files of //:img {made['digest'][:19]} lamina: files" in out, out  # no "layer -1" in the legend

    # compose takes the layer as it is
    (tmp_path / "spec.json").write_text(json.dumps(
        {"base": "oci:" + str(tmp_path / "base"), "files_layer": str(tmp_path / "fl"), "format": "oci"}))
    rc, out, _ = _run(capsys, "compose", str(tmp_path / "spec.json"), "--out", str(tmp_path / "img"))
    assert rc == 0, out
    top = open_image("oci:" + str(tmp_path / "img")).layers[-1]
    assert (top.descriptor.digest, top.diff_id, top.created_by) == (made["digest"], made["diff_id"], "lamina: files")

    (tmp_path / "none.json").write_text(json.dumps({"files": []}))
    rc, _, err = _run(capsys, "files-layer", str(tmp_path / "none.json"), "--out", str(tmp_path / "fl2"))
    assert rc != 0 and "no files: a files layer needs at least one" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "files-layer", str(tmp_path / "nope.json"), "--out", str(tmp_path / "fl3"))
    assert rc != 0 and "nope.json" in err and "Traceback" not in err


def test_files_layer_below_the_scans_of_a_usr_merged_base_keeps_its_symlinks(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    write_oci_dir(FakeImage([FakeLayer({"usr/": None, "usr/bin/": None, "usr/bin/sh": b"sh", "bin": "->usr/bin"})]),
                  str(tmp_path / "base"))
    (tmp_path / "tool").write_bytes(b"tool")
    (tmp_path / "files.json").write_text(json.dumps({"files": [{"src": str(tmp_path / "tool"), "dest": "/bin/tool"}]}))
    base = str(tmp_path / "base.json")
    assert _run(capsys, "scan", str(tmp_path / "base"), "--out", base)[0] == 0
    reports = {}
    for name, below in (("on-base", ["--below", base]), ("blind", [])):
        rc, out, err = _run(capsys, "files-layer", str(tmp_path / "files.json"), "--out", str(tmp_path / name), *below)
        assert rc == 0, err
        (index,) = read_index(str(tmp_path / name / "index.json"))
        reports[name] = ([e.path for e in index.entries],
                         _run(capsys, "check", "--index", base, "--index", str(tmp_path / name / "index.json"))[1])
    paths, report = reports["on-base"]
    assert paths == ["usr", "usr/bin", "usr/bin/tool"] and "replaced symlinks and directories: none" in report, report
    paths, report = reports["blind"]  # made without the layers below: its bin/ replaces the symlink, and check says so
    assert paths == ["bin", "bin/tool"]
    assert "replaced symlinks and directories (1):" in report and "replaces the symlink /bin -> usr/bin" in report, report
