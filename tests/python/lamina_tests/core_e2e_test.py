"""End to end for the lamina core: `lamina compose` of layers of real `docker save` images.

Three source images are built FROM the busybox base in the Docker engine, each exercising something
a layer-level composer must carry through untouched:

  A  adds files (layer 1), then deletes a file of the *base* (layer 2: a whiteout, etc/.wh.group)
  B  creates /opt/thing (layer 1), then replaces the whole directory (layer 2: an opaque directory)
  C  adds a file that no selector picks (layer 1), a hard link (layer 2), another file (layer 3)

The composed image (base + A[1:] + B[1] + B[2] + C[2] + C[3], picked with every selector form) is
written in all three formats and checked by the tools that consume them: `docker load`/`run`/`inspect`,
`skopeo inspect`/`copy` (through a throwaway registry) and `umoci unpack`.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

import lamina.cli
from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.services import Registry, docker, require_docker, start_registry

PREFIX = f"lamina-e2e-{uuid.uuid4().hex[:8]}"
COMPOSED_TAG = f"{PREFIX}/composed:1"  # a ref with '/' and ':', which umoci and skopeo must address
TOOL_TIMEOUT_S = 300
FORMATS = ["docker-archive", "oci", "oci-archive"]

DOCKERFILE_A = f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /opt/a && echo alpha > /opt/a/alpha && echo beta > /opt/a/beta  # a-files
RUN rm /etc/group  # a-delete-base-file
"""

DOCKERFILE_B = f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /opt/thing/sub && echo old > /opt/thing/old && echo old > /opt/thing/sub/old  # thing-v1
RUN rm -rf /opt/thing && mkdir /opt/thing && echo new > /opt/thing/new  # thing-v2
"""

DOCKERFILE_C = f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /opt/c && echo skipped > /opt/c/skipped  # c-not-picked
RUN echo hard > /opt/c/file && ln /opt/c/file /opt/c/link  # c-hardlink
RUN echo extra > /opt/c/extra  # c-extra
"""

# What the composed image's root filesystem must look like, as `KEY=VALUE` lines the probe prints.
PROBE_SCRIPT = r"""
ex() { if [ -e "$1" ] || [ -L "$1" ]; then echo present; else echo gone; fi; }
echo "alpha=$(cat /opt/a/alpha)"
echo "beta=$(cat /opt/a/beta)"
echo "group=$(ex /etc/group)"
echo "passwd=$(cat /etc/passwd)"
echo "thing=$(ls -A /opt/thing | tr '\n' ' ')"
echo "thing_new=$(cat /opt/thing/new)"
echo "thing_sub=$(ex /opt/thing/sub)"
echo "c_file=$(cat /opt/c/file)"
echo "c_link=$(cat /opt/c/link)"
echo "c_extra=$(cat /opt/c/extra)"
echo "c_skipped=$(ex /opt/c/skipped)"
echo "ino_file=$(stat -c %i /opt/c/file)"
echo "ino_link=$(stat -c %i /opt/c/link)"
echo "nlink=$(stat -c %h /opt/c/file)"
"""

EXPECTED_PROBE = {
    "alpha": "alpha",
    "beta": "beta",
    "group": "gone",  # deleted by A's second layer: the whiteout still applies to the base below it
    "passwd": "root:x:0:0:root:/root:/bin/sh",  # the base's other files are untouched
    "thing": "new ",  # the opaque directory hides B's first layer's old, sub/old
    "thing_new": "new",
    "thing_sub": "gone",
    "c_file": "hard",
    "c_link": "hard",
    "c_extra": "extra",
    "c_skipped": "gone",  # C's first layer is not picked
    "nlink": "2",
}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def diff_ids(ref: str) -> List[str]:
    """The engine's view of an image's layers (RootFS.Layers)."""
    return json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref, timeout=60).stdout)


def run_tool(*argv: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    proc = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=TOOL_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc


def run_lamina(*args: str) -> "subprocess.CompletedProcess[str]":
    """The lamina CLI in a fresh interpreter (what `python -m lamina ARGS` runs).

    `-c` rather than `-m lamina`: the sandbox Pants builds holds the modules the test imports, and
    lamina/__main__.py is not one of them. The interpreter gets this process's sys.path.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    code = "import sys; from lamina.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=TOOL_TIMEOUT_S)


def compose(spec: dict, out: Path, fmt: str, in_process: bool = False,
            capsys: Optional[pytest.CaptureFixture] = None) -> dict:
    """`lamina compose SPEC --out OUT --format FMT`; returns the JSON summary it prints."""
    spec_path = out.parent / f"{out.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    argv = ["compose", str(spec_path), "--out", str(out), "--format", fmt]
    if in_process:
        assert capsys is not None
        capsys.readouterr()
        rc = lamina.cli.main(argv)
        captured = capsys.readouterr()
        stdout, stderr = captured.out, captured.err
    else:
        proc = run_lamina(*argv)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert rc == 0, f"lamina {' '.join(argv)} exited {rc}:\n{stderr}"
    spec_path.unlink()
    return json.loads(stdout)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def tree_bytes(root: Path) -> Dict[str, bytes]:
    """Every file under root (relative path -> content), directories as empty markers."""
    out: Dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel + ("/" if path.is_dir() else "")] = b"" if path.is_dir() else path.read_bytes()
    return out


def parse_probe(text: str) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# ----------------------------------------------------------------------------------------------
# Fixtures: the source images, built and saved once for the module
# ----------------------------------------------------------------------------------------------


@dataclass
class Sources:
    dir: Path
    base_tar: Path
    tars: Dict[str, Path]  # "a" / "b" / "c" -> docker save archive
    base_diff_ids: List[str]
    diff_ids: Dict[str, List[str]]  # "a" / "b" / "c" -> RootFS.Layers (base layer first)

    def spec(self, tags: List[str]) -> dict:
        """base + A[1:] + B[1] + B[2] + C[2] + C[3], each picked with a different selector form."""
        b_top = self.diff_ids["b"][2]
        return {
            "base": f"docker-archive:{self.base_tar}",
            "layers": [
                {"source": str(self.tars["a"]), "layer": "1:"},  # slice; bare path (sniffed)
                {"source": f"docker-archive:{self.tars['b']}", "layer": "created_by=thing-v1"},
                {"source": f"docker-archive:{self.tars['b']}", "layer": b_top[:19]},  # sha256: + 12 hex
                {"source": str(self.tars["c"]), "layer": "path=/opt/c/link"},
                {"source": str(self.tars["c"]), "layer": -1},  # an index, as a JSON number
            ],
            "tags": tags,
        }

    @property
    def expected_diff_ids(self) -> List[str]:
        a, b, c = self.diff_ids["a"], self.diff_ids["b"], self.diff_ids["c"]
        return self.base_diff_ids + [a[1], a[2], b[1], b[2], c[2], c[3]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    require_docker()
    build_base_image()
    tags = {"a": f"{PREFIX}/a:latest", "b": f"{PREFIX}/b:latest", "c": f"{PREFIX}/c:latest"}
    try:
        build_image(tags["a"], DOCKERFILE_A)
        build_image(tags["b"], DOCKERFILE_B)
        build_image(tags["c"], DOCKERFILE_C)
        root = tmp_path_factory.mktemp("sources")
        base_tar = docker_save(BASE_IMAGE, root / "base.tar")
        tars = {k: docker_save(tag, root / f"{k}.tar") for k, tag in tags.items()}
        base = diff_ids(BASE_IMAGE)
        ids = {k: diff_ids(tag) for k, tag in tags.items()}
        assert len(base) == 1, "the selectors below assume a one-layer base"
        for k, layers in ids.items():
            assert layers[: len(base)] == base, f"image {k} is not built on the base"
        assert [len(ids[k]) - len(base) for k in "abc"] == [2, 2, 3]
        yield Sources(root, base_tar, tars, base, ids)
    finally:
        for tag in tags.values():
            docker("image", "rm", "-f", tag, check=False, timeout=120)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


# ----------------------------------------------------------------------------------------------
# 1. docker-archive -> docker load / run / inspect
# ----------------------------------------------------------------------------------------------


def test_composed_docker_archive_loads_and_runs_with_the_chosen_layers(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "composed.tar"
    summary = compose(sources.spec([COMPOSED_TAG]), out, "docker-archive")
    expected = sources.expected_diff_ids
    assert summary["layers"] == len(expected) == 7

    # The archive carries each layer's bytes verbatim: `docker save` layers are uncompressed, so each
    # blob's sha256 is the source layer's diff_id.
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == [COMPOSED_TAG]
        assert manifest[0]["Layers"] == [f"blobs/sha256/{d.split(':', 1)[1]}" for d in expected]
        for name in manifest[0]["Layers"]:
            data = tf.extractfile(name).read()  # type: ignore[union-attr]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == "sha256:" + name.rsplit("/", 1)[1]

    try:
        loaded = docker("load", "-i", str(out)).stdout
        assert COMPOSED_TAG in loaded
        info = json.loads(docker("image", "inspect", COMPOSED_TAG).stdout)[0]
        assert info["RootFS"]["Layers"] == expected
        assert info["Id"] == summary["config"]  # the engine's image ID is lamina's config digest
        assert info["Config"]["Cmd"] == ["/bin/sh"]  # inherited from the base

        run = docker("run", "--rm", "--network", "none", COMPOSED_TAG, "sh", "-c", PROBE_SCRIPT)
        probe = parse_probe(run.stdout)
        for key, value in EXPECTED_PROBE.items():
            assert probe.get(key) == value, f"{key}: {probe.get(key)!r} != {value!r}\n{run.stdout}"
        assert probe["ino_file"] == probe["ino_link"], f"hard link broken:\n{run.stdout}"
    finally:
        docker("image", "rm", "-f", COMPOSED_TAG, check=False, timeout=120)


# ----------------------------------------------------------------------------------------------
# 2. oci / oci-archive -> skopeo, a registry, umoci
# ----------------------------------------------------------------------------------------------


def _skopeo_inspect(ref: str, *flags: str) -> dict:
    return json.loads(run_tool("skopeo", "inspect", *flags, ref).stdout)


def _skopeo_raw(ref: str, *flags: str) -> bytes:
    proc = subprocess.run(["skopeo", "inspect", "--raw", *flags, ref], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=TOOL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def test_oci_layout_is_read_by_skopeo_pushed_unchanged_and_unpacked_by_umoci(
    sources: Sources, registry: Registry, tmp_path: Path
) -> None:
    out = tmp_path / "layout"
    summary = compose(sources.spec([COMPOSED_TAG]), out, "oci")
    expected = sources.expected_diff_ids  # uncompressed source layers: digest == diff_id

    index = json.loads((out / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [COMPOSED_TAG]
    assert index["manifests"][0]["digest"] == summary["manifest"]

    # skopeo reads the layout, with the single image unnamed or by its ref name.
    for ref in (f"oci:{out}", f"oci:{out}:{COMPOSED_TAG}"):
        info = _skopeo_inspect(ref)
        assert info["Digest"] == summary["manifest"]
        assert info["Layers"] == expected
    raw = _skopeo_raw(f"oci:{out}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == summary["manifest"]
    assert json.loads(raw)["config"]["digest"] == summary["config"]

    # Through a registry: the manifest and every blob arrive byte for byte.
    dest = f"docker://{registry.host}/{PREFIX}/x:1"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    # --preserve-digests: otherwise skopeo gzips uncompressed layers on the way to a registry (and
    # so changes their digests); with it, it must send lamina's manifest and blobs as they are.
    run_tool("skopeo", "--policy", str(policy), "copy", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{out}:{COMPOSED_TAG}", dest)
    remote = _skopeo_inspect(dest, "--tls-verify=false")
    assert remote["Layers"] == expected
    assert remote["Digest"] == summary["manifest"]
    assert _skopeo_raw(dest, "--tls-verify=false") == raw
    for digest in expected + [summary["config"]]:
        with urllib.request.urlopen(f"{registry.url}/v2/{PREFIX}/x/blobs/{digest}", timeout=60) as resp:
            assert "sha256:" + hashlib.sha256(resp.read()).hexdigest() == digest

    # umoci addresses a ref name containing '/' and ':' as DIR:REF (it splits at the first ':').
    bundle = tmp_path / "bundle"
    run_tool("umoci", "unpack", "--rootless", "--image", f"{out}:{COMPOSED_TAG}", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "opt/a/alpha").read_text() == "alpha\n"
    assert (rootfs / "opt/a/beta").read_text() == "beta\n"
    assert not os.path.lexists(rootfs / "etc/group")
    assert (rootfs / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"
    assert sorted(os.listdir(rootfs / "opt/thing")) == ["new"]
    assert (rootfs / "opt/thing/new").read_text() == "new\n"
    assert (rootfs / "opt/c/file").read_text() == "hard\n"
    assert (rootfs / "opt/c/extra").read_text() == "extra\n"
    assert not os.path.lexists(rootfs / "opt/c/skipped")
    st_file, st_link = os.stat(rootfs / "opt/c/file"), os.stat(rootfs / "opt/c/link")
    assert st_file.st_ino == st_link.st_ino and st_file.st_nlink == 2
    assert os.path.isfile(rootfs / "bin/busybox") and os.readlink(rootfs / "bin/sh") == "busybox"


def test_oci_archive_is_read_by_skopeo(sources: Sources, tmp_path: Path) -> None:
    out = tmp_path / "composed.oci.tar"
    summary = compose(sources.spec(["e2e-archive"]), out, "oci-archive")
    for ref in (f"oci-archive:{out}", f"oci-archive:{out}:e2e-archive"):
        info = _skopeo_inspect(ref)
        assert info["Digest"] == summary["manifest"]
        assert info["Layers"] == sources.expected_diff_ids
    raw = _skopeo_raw(f"oci-archive:{out}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == summary["manifest"]


# ----------------------------------------------------------------------------------------------
# 3. Reproducibility
# ----------------------------------------------------------------------------------------------


def test_composing_twice_gives_identical_bytes_in_every_format(
    sources: Sources, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = sources.spec([COMPOSED_TAG])
    manifests = set()
    for fmt, name in (("docker-archive", "image.tar"), ("oci", "layout"), ("oci-archive", "image.oci.tar")):
        first_dir, second_dir = tmp_path / fmt / "first", tmp_path / fmt / "second"
        first_dir.mkdir(parents=True)
        second_dir.mkdir(parents=True)
        first, second = first_dir / name, second_dir / name
        # Once through a fresh interpreter, once in this one: same code, same bytes.
        s1 = compose(spec, first, fmt)
        s2 = compose(spec, second, fmt, in_process=True, capsys=capsys)
        assert s1["manifest"] == s2["manifest"] and s1["config"] == s2["config"]
        manifests.add(s1["manifest"])
        if fmt == "oci":
            t1, t2 = tree_bytes(first), tree_bytes(second)
            assert sorted(t1) == sorted(t2)
            assert t1 == t2
            assert f"blobs/sha256/{s1['manifest'].split(':', 1)[1]}" in t1
        else:
            assert sha256_file(first) == sha256_file(second)
            assert first.read_bytes() == second.read_bytes()
        # nothing but the output is left beside it (no temporary files)
        assert sorted(p.name for p in first_dir.iterdir()) == [name]
        assert sorted(p.name for p in second_dir.iterdir()) == [name]
    # The same image whatever the container format.
    assert len(manifests) == 1


# ----------------------------------------------------------------------------------------------
# 4. A corrupt source archive is refused
# ----------------------------------------------------------------------------------------------


def _flip_a_content_byte(saved: Path, layer_name: str, member: str) -> Path:
    """A copy of a `docker save` archive with one byte of `member`'s content, in layer `layer_name`, flipped.

    The layer's inner tar stays well-formed (only file data changes), so only its digest tells.
    """
    with tarfile.open(saved) as outer:
        layer = outer.getmember(layer_name)
        with tarfile.open(fileobj=outer.extractfile(layer)) as inner:  # type: ignore[arg-type]
            target = inner.getmember(member)
            offset = layer.offset_data + target.offset_data
    corrupt = saved.with_name("corrupt-" + saved.name)
    data = bytearray(saved.read_bytes())
    data[offset] ^= 0x01
    corrupt.write_bytes(bytes(data))
    return corrupt


@dataclass
class Refused:
    corrupt: Path  # the doctored source archive
    out: Path  # where the output was asked for
    proc: "subprocess.CompletedProcess[str]"


def _compose_from_corrupt_archive(sources: Sources, tmp_path: Path, fmt: str) -> Refused:
    with tarfile.open(sources.tars["a"]) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    files_layer = manifest[0]["Layers"][1]  # A's "a-files" layer, which holds opt/a/alpha
    work = tmp_path / "work"
    work.mkdir()
    saved = work / "a.tar"
    saved.write_bytes(sources.tars["a"].read_bytes())
    corrupt = _flip_a_content_byte(saved, files_layer, "opt/a/alpha")
    assert corrupt.stat().st_size == saved.stat().st_size and corrupt.read_bytes() != saved.read_bytes()

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("layout" if fmt == "oci" else "image.tar")
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps({
        "base": f"docker-archive:{sources.base_tar}",
        "layers": [{"source": f"docker-archive:{corrupt}", "layer": "1"}],
        "tags": [COMPOSED_TAG],
    }))
    return Refused(corrupt, out, run_lamina("compose", str(spec_path), "--out", str(out), "--format", fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_flipped_byte_in_a_layer_is_refused_leaving_no_output(sources: Sources, tmp_path: Path, fmt: str) -> None:
    r = _compose_from_corrupt_archive(sources, tmp_path, fmt)
    assert r.proc.returncode == 2, r.proc.stderr
    lines = r.proc.stderr.splitlines()
    assert len(lines) == 1, r.proc.stderr
    assert lines[0].startswith("lamina: error: "), r.proc.stderr
    assert "Traceback" not in r.proc.stderr
    assert r.proc.stdout == ""
    assert not os.path.lexists(r.out)
    assert list(r.out.parent.iterdir()) == [], "temporary files left beside the output"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_flipped_byte_error_names_the_archive(sources: Sources, tmp_path: Path, fmt: str) -> None:
    r = _compose_from_corrupt_archive(sources, tmp_path, fmt)
    assert r.proc.returncode == 2, r.proc.stderr
    if str(r.corrupt) not in r.proc.stderr:
        pytest.fail(f"the error does not name the archive {r.corrupt}:\n{r.proc.stderr}", pytrace=False)
