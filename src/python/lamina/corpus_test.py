"""Golden corpus: lamina's outputs for a fixed set of inputs, recorded so a refactor can prove it changed nothing.

The test builds small source images (every source kind lamina reads from files), then drives the
core ONLY through the command line (`lamina.cli.main`): `extract`, `files-layer` and `compose`
with every selector form, output format, config override, tags and the audit file. From the
written files alone it derives, per case, the manifest and config digests, the layer digests, a
sha256 of the output (an archive's bytes; for a directory, of its sorted "path sha256" listing)
and of the audit file, and compares them with `corpus_digests.json`.

It imports no core API (compose, build, image, ...): those may change; the CLI and the files it
writes must not.

Regenerate the table (only when an output is MEANT to change, and say why in the commit):

    LAMINA_CORPUS_REGENERATE=1 PYTHONPATH=src/python python -m pytest -q -p no:cacheprovider \
        src/python/lamina/corpus_test.py

That rewrites src/python/lamina/corpus_digests.json in the source tree. Without the variable the
test only compares, and fails on any difference, printing the case, the expected and the actual value.

Determinism: every path given to lamina is relative to the test's work directory (the test
chdirs there), every layer spec that names a source has a fixed "name", and nothing hashed may
contain the work directory's absolute path (checked). The compressed source layers (gzip, zstd)
are stored in the table as bytes ("inputs.frozen_blobs") rather than compressed here, so the
inputs do not depend on the machine's zlib/zstd; the "inputs" digests of the source files are
checked first, so a difference there blames the inputs, not lamina. lamina's own files layer is
gzip made by the machine's zlib: the "zlib" canary tells when that differs from where the table
was recorded (then the files-layer digests cannot be compared on that machine).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, Optional

# The test images. The only import of lamina_testing: when it moves, change this line.
from lamina_testing.images import FakeImage, FakeLayer, compress, write_docker_classic, write_docker_oci, write_oci_archive, write_oci_dir, write_oci_multi

from lamina.cli import main

GOLDEN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_digests.json")
REGENERATE_VAR = "LAMINA_CORPUS_REGENERATE"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- inputs -------------------------------------------------------------------------------------

@dataclass
class _Layer(FakeLayer):
    """A FakeLayer whose compressed blob is the stored one (not the machine's compressor's output)."""

    frozen: Optional[bytes] = None

    @property
    def blob(self) -> bytes:
        if self.compression == "none":
            return self.tar
        assert self.frozen is not None
        return self.frozen


def _images() -> dict[str, FakeImage]:
    def L(files: dict, created_by: str, compression: str = "none") -> _Layer:  # noqa: N802
        return _Layer(files, created_by, compression)

    return {
        "base": FakeImage([
            L({"bin/": None, "bin/sh": b"#!sh\n", "etc/": None, "etc/alias": "->os-release",
               "etc/os-release": b"ID=corpus\n"}, "ADD rootfs /"),
            L({"srv/": None, "srv/motd": b"hello\n", "srv/z-hard": "=>srv/motd"}, "RUN mkdir /srv"),
        ], empty_history=[(1, "ENV A=1")]),
        "tools": FakeImage([
            L({"opt/tools/": None, "opt/tools/README": b"tools\n"}, "ADD tools /opt"),
            L({"usr/bin/jq": b"jq" * 300}, "RUN apk add jq", "gzip"),
            L({"usr/bin/yq": b"yq" * 200}, "RUN apk add yq\n&& clean", "zstd"),
        ], empty_history=[(2, "LABEL x=y"), (3, "CMD [\"yq\"]")]),
        "app": FakeImage([
            L({"app/": None, "app/main.py": b"print('hi')\n"}, "COPY app /app"),
            L({"app/lib/": None, "app/lib/util.py": b"X = 1\n"}, "RUN pip install util", "gzip"),
        ], config_extra={"config": {"Env": ["PATH=/bin", "LANG=C"], "Cmd": ["python", "/app/main.py"],
                                    "Labels": {"from": "app"}, "ExposedPorts": {"80/tcp": {}}}}),
        "misc": FakeImage([
            L({"usr/share/misc/a": b"a\n"}, "ADD a", "zstd"),
            L({"usr/share/misc/b": b"b\n"}, "RUN make b"),
            L({"usr/share/misc/c": b"c\n"}, "RUN make c", "gzip"),
        ]),
        "plain": FakeImage([
            L({"var/lib/plain/x": b"x\n"}, "RUN make x"),
            L({"var/lib/plain/y": b"y\n"}, "RUN touch y"),
        ]),
        "extra": FakeImage([
            L({"etc/extra": b"extra\n"}, "ADD extra"),
            L({"usr/lib/extra.so": b"not really elf\n"}, "RUN build extra", "gzip"),
        ]),
        "extra-arm": FakeImage([
            L({"etc/extra": b"extra arm\n"}, "ADD extra"),
        ], architecture="arm64", variant="v8"),
        "plat-amd64": FakeImage([L({"etc/plat": b"amd64\n"}, "ADD plat")]),
        "plat-arm64": FakeImage([L({"etc/plat": b"arm64\n"}, "ADD plat", "gzip")], architecture="arm64", variant="v8"),
    }


def _decompress(blob: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(blob)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


def _freeze(images: dict[str, FakeImage], frozen: dict[str, str], regenerate: bool) -> dict[str, str]:
    """Give every compressed layer its stored blob (keyed by diff_id); returns the blobs used."""
    used = {}
    for image in images.values():
        for layer in image.layers:
            assert isinstance(layer, _Layer)
            if layer.compression == "none":
                continue
            key = _sha(layer.tar)
            if key not in frozen:
                assert regenerate, f"no stored {layer.compression} blob for layer {layer.created_by!r} ({key}): " \
                                   f"regenerate the table ({REGENERATE_VAR}=1)"
                frozen[key] = base64.b64encode(compress(layer.tar, layer.compression)).decode()
            layer.frozen = base64.b64decode(frozen[key])
            assert _decompress(layer.frozen, layer.compression) == layer.tar, f"stored blob {key} is not that layer"
            used[key] = frozen[key]
    return used


def _write_inputs(images: dict[str, FakeImage]) -> None:
    os.makedirs("src")
    write_docker_classic({"base:1": images["base"], "tools:1": images["tools"]}, "src/multi.tar")
    write_docker_oci(images["app"], "app:2", "src/docker25.tar")
    write_oci_archive(images["misc"], "src/misc.oci.tar", tag="misc:1")
    write_oci_dir(images["plain"], "src/plain")
    write_oci_multi("src/layout", [(images["extra"], "extra:1"), (images["extra-arm"], "extra-arm:1")])
    write_oci_multi("src/platforms", [(images["plat-amd64"], None), (images["plat-arm64"], None)], nested=True)
    files = {
        "files/hello.txt": (b"hello from files\n", 0o644),
        "files/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
        "files/tree/a.txt": (b"a in tree\n", 0o644),
        "files/tree/sub/b.txt": (b"b in tree/sub\n", 0o600),
        "files/tree/sub/tool": (b"#!/bin/sh\n", 0o700),
        "files/tree2/c.bin": (bytes(range(256)), 0o644),
    }
    for path, (data, mode) in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)  # the files layer keeps the executable bit: fix it against the umask


# --- digests of outputs ---------------------------------------------------------------------------

class _Leak(AssertionError):
    pass


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _files_of(path: str) -> dict[str, bytes]:
    """Every regular file of an output (a directory, or a tar) by relative path."""
    if os.path.isdir(path):
        out = {}
        for dirpath, _, names in os.walk(path):
            for name in names:
                full = os.path.join(dirpath, name)
                out[os.path.relpath(full, path).replace(os.sep, "/")] = _read(full)
        return out
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _listing_digest(files: dict[str, bytes]) -> str:
    return _sha("".join(f"{name} {_sha(files[name])}\n" for name in sorted(files)).encode())


class Corpus:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.forbidden = {os.path.abspath(workdir).encode(), os.path.realpath(workdir).encode()}
        self.results: dict[str, dict[str, Any]] = {}

    def check_no_path(self, what: str, data: bytes) -> None:
        for p in self.forbidden:
            if p in data:
                raise _Leak(f"{what} holds the work directory's path {p.decode()!r}: it would not be deterministic")

    def record(self, case: str, values: dict[str, Any]) -> None:
        assert case not in self.results, case
        self.results[case] = values

    def lamina(self, *argv: str) -> None:
        rc = main(list(argv))
        assert rc == 0, f"lamina {' '.join(argv)} exited {rc} (its error is printed above)"

    def image_values(self, out: str) -> dict[str, Any]:
        files = _files_of(out)
        for name, data in files.items():
            self.check_no_path(f"{out}: {name}", data)
        index = json.loads(files["index.json"])
        manifests = [e["digest"] for e in index["manifests"]]
        assert len(set(manifests)) == 1, manifests
        manifest_bytes = files["blobs/sha256/" + manifests[0][7:]]
        assert _sha(manifest_bytes) == manifests[0]
        manifest = json.loads(manifest_bytes)
        config = manifest["config"]["digest"]
        if config[7:] and "blobs/sha256/" + config[7:] in files:
            assert _sha(files["blobs/sha256/" + config[7:]]) == config
        values: dict[str, Any] = {
            "manifest": manifests[0],
            "config": config,
            "layers": [l["digest"] for l in manifest["layers"]],
            "output": _listing_digest(files) if os.path.isdir(out) else _sha(_read(out)),
        }
        if "manifest.json" in files:  # a docker-archive: what `docker load` reads
            docker = json.loads(files["manifest.json"])
            values["docker_config"] = docker[0]["Config"]
            values["repo_tags"] = docker[0]["RepoTags"]
        return values

    def compose(self, case: str, spec: dict, out: str, fmt: Optional[str] = None) -> None:
        os.makedirs("specs", exist_ok=True)
        os.makedirs("audit", exist_ok=True)
        spec_path = f"specs/{case}.json"
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=2, sort_keys=True)
        audit = f"audit/{case}.json"
        self.lamina("compose", spec_path, "--out", out, "--audit", audit, *(["--format", fmt] if fmt else []))
        values = self.image_values(out)
        data = _read(audit)
        self.check_no_path(audit, data)
        values["audit"] = _sha(data)
        self.record("compose:" + case, values)

    def extract(self, case: str, source: str, selector: str, *extra: str) -> str:
        out = f"bundles/{case}"
        self.lamina("extract", source, "--layer", selector, "--out", out, *extra)
        values = self.image_values(out)
        selection = json.loads(_read(os.path.join(out, "lamina-selection.json")))
        values["selected"] = [l["index"] for l in selection["layers"]]
        self.record("extract:" + case, values)
        return out

    def files_layer(self, case: str, spec: dict, name: str) -> str:
        os.makedirs("specs", exist_ok=True)
        spec_path = f"specs/files-layer-{case}.json"
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=2, sort_keys=True)
        out = f"files-layers/{case}"
        self.lamina("files-layer", spec_path, "--out", out, "--name", name)
        files = _files_of(out)
        for n, data in files.items():
            self.check_no_path(f"{out}/{n}", data)
        meta = json.loads(files["files-layer.json"])
        self.record("files-layer:" + case, {
            "digest": meta["digest"], "diff_id": meta["diff_id"], "output": _listing_digest(files),
            "files": {n: _sha(files[n]) for n in sorted(files)},
        })
        return out


def _zlib_canary() -> str:
    """What the machine's zlib makes of a fixed text at the level lamina's files layer uses."""
    text = "".join(f"{i} {hashlib.sha256(str(i).encode()).hexdigest()}\n" for i in range(200)).encode()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return _sha(c.compress(text) + c.flush())


def _run_corpus(corpus: Corpus, images: dict[str, FakeImage]) -> None:
    tools_l1, tools_l2 = images["tools"].layers[1], images["tools"].layers[2]
    TOOLS = "docker-archive:src/multi.tar:tools:1"  # noqa: N806
    BASE = "docker-archive:src/multi.tar:base:1"  # noqa: N806

    # Bundles (`lamina extract`), later used as a base and as layer sources.
    corpus.extract("base", BASE, ":", "--name", "base")
    corpus.extract("jq", TOOLS, "path=/usr/bin/jq", "--name", "tools")
    corpus.extract("yq", TOOLS, "-1", "--name", "tools")
    corpus.extract("misc-slice", "oci-archive:src/misc.oci.tar:misc:1", "1:", "--name", "misc")
    corpus.extract("app-pip", "src/docker25.tar", "created_by=pip install", "--name", "app")
    corpus.extract("plat-arm", "oci:src/platforms", "0", "--name", "platforms", "--platform", "linux/arm64/v8")

    corpus.files_layer("app", {"files": [{"src": "files/hello.txt", "dest": "/srv/hello.txt"}],
                               "file_dirs": [{"src": "files/tree", "dest": "/srv/tree"}]}, "app files")

    all_config = {
        "env": {"LANG": "C.UTF-8", "NEW": "1"},
        "entrypoint": ["/usr/bin/jq"],
        "cmd": ["--help"],
        "workdir": "/app",
        "user": "1000:1000",
        "labels": {"org.example.team": "corpus", "from": "override"},
        "exposed_ports": ["8080/tcp", "53/udp"],
        "volumes": ["/data"],
        "stop_signal": "SIGTERM",
    }

    # Classic docker save, multi-image by tag; index given as a JSON int; sha256:<diff_id prefix>.
    corpus.compose("classic", {
        "base": {"source": BASE, "name": "base"},
        "layers": [
            {"source": TOOLS, "layer": 1, "name": "tools"},
            {"source": TOOLS, "layer": "sha256:" + _sha(tools_l2.tar)[7:19], "name": "tools"},
        ],
        "tags": ["corpus/classic:1", "corpus/classic:latest"],
        "target": "//corpus:classic",
        "format": "docker-archive",
    }, "out/classic.tar")

    # Docker 25+ save as a bare (sniffed) path base; sha256:<digest prefix>; oci:DIR:REF; every config override.
    corpus.compose("docker25-config", {
        "base": {"source": "src/docker25.tar", "name": "app"},
        "layers": [
            {"source": TOOLS, "layer": "sha256:" + _sha(tools_l1.blob)[7:19], "name": "tools", "target": "//corpus:jq"},
            {"source": "oci:src/layout:extra:1", "layer": "-1", "name": "extra"},
        ],
        "config": all_config,
        "tags": ["corpus/config:1"],
        "format": "oci",
    }, "out/docker25-config")

    # Scratch with a platform; oci-archive:PATH:REF with a slice; oci:DIR (no ref) with created_by=;
    # docker-archive:PATH:TAG of a Docker 25+ save with path=; files and file_dirs. In every format.
    scratch = {
        "platform": "linux/amd64",
        "layers": [
            {"source": "oci-archive:src/misc.oci.tar:misc:1", "layer": "1:", "name": "misc"},
            {"source": "oci:src/plain", "layer": "created_by=^RUN make", "name": "plain"},
            {"source": "docker-archive:src/docker25.tar:app:2", "layer": "path=/app/lib/util.py", "name": "app"},
        ],
        "files": [{"src": "files/hello.txt", "dest": "/etc/hello.txt"},
                  {"src": "files/run.sh", "dest": "usr/local/bin/run"}],
        "file_dirs": [{"src": "files/tree"}, {"src": "files/tree2", "dest": "/opt/tree2"}],
        "config": {"entrypoint": ["/usr/local/bin/run"]},
        "tags": ["corpus/scratch:1"],
        "target": "//corpus:scratch",
        "format": "docker-archive",
    }
    corpus.compose("scratch-files.docker-archive", scratch, "out/scratch-files.tar")
    corpus.compose("scratch-files.oci", scratch, "out/scratch-files.oci", fmt="oci")
    corpus.compose("scratch-files.oci-archive", scratch, "out/scratch-files.oci.tar", fmt="oci-archive")

    # Bundles: as the base (its recorded name) and as layer sources (no "layer": the bundle's own
    # selection), one renamed, one in the string form.
    bundles = {
        "base": {"source": "bundles/base"},
        "layers": [{"source": "bundles/jq"}, {"source": "bundles/yq", "name": "yq renamed"}, "bundles/misc-slice",
                   {"source": "bundles/app-pip", "target": "//corpus:pip"}],
        "tags": ["corpus/bundles:1"],
    }
    corpus.compose("bundles.docker-archive", bundles, "out/bundles.tar")
    corpus.compose("bundles.oci", bundles, "out/bundles.oci", fmt="oci")

    # A files layer made by `lamina files-layer`, on an oci:DIR:REF base, index 0 as a string.
    corpus.compose("files-layer", {
        "base": {"source": "oci:src/layout:extra:1", "name": "extra"},
        "layers": [{"source": "oci:src/plain", "layer": "0", "name": "plain"}],
        "files_layer": "files-layers/app",
        "config": {"cmd": ["cat", "/srv/hello.txt"]},
        "format": "oci",
    }, "out/files-layer")

    # A multi-platform OCI layout (image index blob) picked by the spec's platform.
    corpus.compose("platform-arm64", {
        "base": {"source": "oci:src/platforms", "name": "platforms"},
        "platform": "linux/arm64/v8",
        "layers": [{"source": "oci:src/layout:extra-arm:1", "layer": ":", "name": "extra-arm"}],
        "format": "oci-archive",
    }, "out/platform-arm64.tar")
    corpus.compose("platform-mismatch", {
        "base": {"source": "oci:src/platforms", "name": "platforms"},
        "platform": "linux/arm64/v8",
        "layers": [{"source": TOOLS, "layer": "-1", "name": "tools"}],
        "allow_platform_mismatch": True,
        "format": "docker-archive",
    }, "out/platform-mismatch.tar")

    # No names: sources are recorded as given (relative paths here); base in the string form.
    corpus.compose("default-names", {
        "base": BASE,
        "layers": [{"source": "oci-archive:src/misc.oci.tar", "layer": "0"}, {"source": "oci:src/plain", "layer": -1},
                   "bundles/jq"],
        "format": "oci",
    }, "out/default-names")

    # lamina's own outputs read back as sources: a docker-archive it wrote as the base, layers from
    # its oci-archive (the files layer) and its oci directory.
    corpus.compose("recompose", {
        "base": {"source": "out/classic.tar", "name": "classic"},
        "layers": [
            {"source": "oci-archive:out/scratch-files.oci.tar", "layer": "-1", "name": "scratch"},
            {"source": "oci:out/docker25-config", "layer": "created_by=^RUN build", "name": "config"},
        ],
        "tags": ["corpus/recompose:1"],
        "format": "oci-archive",
    }, "out/recompose.tar")
    corpus.extract("from-output", "oci:out/docker25-config", "sha256:" + _sha(images["extra"].layers[1].blob)[7:19],
                   "--name", "config")


def _input_digests() -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir("src")):
        path = os.path.join("src", name)
        out[name] = _listing_digest(_files_of(path)) if os.path.isdir(path) else _sha(_read(path))
    out["files"] = _listing_digest(_files_of("files"))
    return out


def _compare(expected: dict, actual: dict, section: str) -> list[str]:
    problems = []
    for case in sorted(set(expected) | set(actual)):
        if case not in actual:
            problems.append(f"{section} {case}: in the table but not made by the test")
            continue
        if case not in expected:
            problems.append(f"{section} {case}: not in the table (actual {json.dumps(actual[case], sort_keys=True)})")
            continue
        for key in sorted(set(expected[case]) | set(actual[case])):
            e, a = expected[case].get(key), actual[case].get(key)
            if e != a:
                problems.append(f"{section} {case} [{key}]:\n    expected {json.dumps(e)}\n    actual   {json.dumps(a)}")
    return problems


def test_corpus_outputs_match_the_golden_table(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    regenerate = os.environ.get(REGENERATE_VAR) == "1"
    golden: dict = {}
    if os.path.exists(GOLDEN_PATH):
        with open(GOLDEN_PATH) as f:
            golden = json.load(f)
    else:
        assert regenerate, f"{GOLDEN_PATH} is missing; make it with {REGENERATE_VAR}=1"
    work = tmp_path / "corpus"
    work.mkdir()
    monkeypatch.chdir(work)

    images = _images()
    frozen = _freeze(images, dict(golden.get("inputs", {}).get("frozen_blobs", {})), regenerate)
    _write_inputs(images)
    corpus = Corpus(str(work))
    _run_corpus(corpus, images)

    actual_inputs = {"environment": {"zlib": _zlib_canary()}, "sources": _input_digests()}
    if regenerate:
        table = {
            "_comment": f"Written by corpus_test.py with {REGENERATE_VAR}=1; see its docstring. Do not edit by hand.",
            "inputs": {**actual_inputs, "frozen_blobs": dict(sorted(frozen.items()))},
            "cases": corpus.results,
        }
        with open(GOLDEN_PATH, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {GOLDEN_PATH}: {len(corpus.results)} cases")
        return

    inputs = golden["inputs"]
    problems = _compare({"sources": inputs["sources"]}, {"sources": actual_inputs["sources"]}, "input")
    assert not problems, ("the test's INPUT files differ from those the table was made from (the test images "
                          "are not what they were; lamina is not to blame):\n" + "\n".join(problems))
    zlib_note = ""
    if inputs["environment"]["zlib"] != actual_inputs["environment"]["zlib"]:
        zlib_note = ("\nNOTE: this machine's zlib compresses differently from the one the table was made with, "
                     "so the digests of lamina's gzip files layers (and of images holding them) differ for that reason.")
    problems = _compare(golden["cases"], corpus.results, "case")
    assert not problems, (f"{len(problems)} value(s) differ from {os.path.basename(GOLDEN_PATH)}:\n"
                          + "\n".join(problems) + zlib_note)
