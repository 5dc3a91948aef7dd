"""End to end for composition analysis: `lamina scan`, `lamina check` and `lamina layers` on real `docker save` images.

Images are built FROM the busybox base in the Docker engine:

  apt-a, apt-b  each a RUN step writing its own var/lib/dpkg/status (as apt-get would)
  echo-other    replaces /bin/echo with its own file (a base where /bin/echo comes from another layer)
  rm-echo       RUN rm /bin/echo (a whiteout made against the plain busybox base)
  dyn           the host's libc and loader (layer 1), a libfoo.so built here (layer 2), a binary
                linked against it (layer 3)
  history       RUN steps with ENV, CMD and LABEL (empty history entries) between them
  script        a `#!/bin/sh` script /usr/local/bin/greet in its top layer

Every index is made per layer, as the Pants plugin does for each extracted layer, and checked in
stack order.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import lamina.cli
from lamina.elf import parse_elf
from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.services import docker, require_docker

PREFIX = f"lamina-analysis-{uuid.uuid4().hex[:8]}"

DOCKERFILES = {
    "apt-a": f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /var/lib/dpkg && printf 'Package: alpha\\nStatus: install ok installed\\n\\n' > /var/lib/dpkg/status  # apt-alpha
""",
    "apt-b": f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /var/lib/dpkg && printf 'Package: beta\\nStatus: install ok installed\\n\\n' > /var/lib/dpkg/status  # apt-beta
""",
    "echo-other": f"""\
FROM {BASE_IMAGE}
RUN rm /bin/echo && printf '#!/bin/sh\\nprintf "%s\\\\n" "$*"\\n' > /bin/echo && chmod 755 /bin/echo  # other-echo
""",
    "rm-echo": f"""\
FROM {BASE_IMAGE}
RUN rm /bin/echo  # x-rm-echo
""",
    "history": f"""\
FROM {BASE_IMAGE}
ENV FIRST=1
RUN echo one > /one  # h-one
CMD ["sh"]
ENV SECOND=2
RUN echo two > /two  # h-two
LABEL purpose=history
""",
    "script": f"""\
FROM {BASE_IMAGE}
RUN mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho started\\n' > /usr/local/bin/greet && chmod 755 /usr/local/bin/greet
""",
}

# The classic builder's COPY keeps the context's 0644, so the files are made executable in an image
# of their own ("dyn-files") first, then copied, modes and all, one layer each into "dyn".
DYN_FILES_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY . /files/
RUN chmod -R 755 /files
"""
DYN_DOCKERFILE = """\
FROM {base}
COPY --from={files} /files/libc/ /
COPY --from={files} /files/libfoo.so /usr/lib/libfoo.so
COPY --from={files} /files/hello /usr/bin/hello
"""

LIBFOO_C = "int foo(void) { return 42; }\n"
HELLO_C = "int foo(void);\nint main(void) { return foo() == 42 ? 0 : 1; }\n"


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def require_under_ci(reason: str) -> None:
    """Skip for `reason`, except under CI (env CI set), which installs what these tests need
    (.ci/services.sh): there a missing tool is a failure, never a quiet skip."""
    if os.environ.get("CI"):
        pytest.fail(f"under CI: {reason}")
    pytest.skip(reason)



def run_lamina(capsys: pytest.CaptureFixture, *argv: str) -> Tuple[int, str, str]:
    """`lamina ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = lamina.cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def lamina_ok(capsys: pytest.CaptureFixture, *argv: str) -> str:
    rc, out, err = run_lamina(capsys, *argv)
    assert rc == 0, f"lamina {' '.join(argv)} exited {rc}:\n{err}{out}"
    return out


def section(report: str, heading: str) -> List[str]:
    """The finding lines under `heading` in a `lamina check` report ([] when it says none)."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line == f"{heading}: none":
            return []
        if line.startswith(f"{heading} ("):
            out = []
            for finding in lines[i + 1:]:
                if not finding.startswith("  "):
                    break
                out.append(finding.strip())
            return out
    raise AssertionError(f"no {heading!r} section in:\n{report}")


def _compile_dyn_context(workdir: Path) -> Dict[str, bytes]:
    """hello (needs libfoo.so and libc) and libfoo.so built by gcc here, plus the host's libc and loader."""
    if shutil.which("gcc") is None:
        require_under_ci("needs gcc (apt-get install gcc libc6-dev) to build a dynamically linked test binary")
    (workdir / "libfoo.c").write_text(LIBFOO_C)
    (workdir / "main.c").write_text(HELLO_C)

    def gcc(*args: str) -> str:
        proc = subprocess.run(["gcc", *args], cwd=workdir, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"gcc {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout.strip()

    gcc("-shared", "-fPIC", "-o", "libfoo.so", "-Wl,-soname,libfoo.so", "libfoo.c")
    gcc("-o", "hello", "main.c", "-L.", "-lfoo")
    hello = (workdir / "hello").read_bytes()
    info = parse_elf(hello)
    assert info is not None and info.interp and "libfoo.so" in info.needed, info
    multiarch = gcc("-print-multiarch")
    libc = os.path.realpath(gcc("-print-file-name=libc.so.6"))
    libdir = f"lib/{multiarch}" if multiarch else "lib"
    return {
        "hello": hello,
        "libfoo.so": (workdir / "libfoo.so").read_bytes(),
        f"libc/{libdir}/libc.so.6": Path(libc).read_bytes(),
        "libc/" + info.interp.lstrip("/"): Path(os.path.realpath(info.interp)).read_bytes(),
    }


@dataclass
class Images:
    dir: Path
    tars: Dict[str, Path]  # name -> docker save archive ("base", every DOCKERFILES key, "dyn")
    tags: Dict[str, str]

    def index(self, capsys: pytest.CaptureFixture, name: str, layer: str) -> str:
        """`lamina scan` of one layer of an image into its own index file (cached per name and layer)."""
        out = self.dir / f"{name}.{layer.replace(':', '_')}.json"
        if not out.exists():
            summary = json.loads(lamina_ok(capsys, "scan", f"docker-archive:{self.tars[name]}", "--layer", layer,
                                           "--name", f"{name}.tar", "--out", str(out)))
            assert summary["out"] == str(out) and summary["skipped"] == []
        return str(out)

    def check(self, capsys: pytest.CaptureFixture, layers: List[Tuple[str, str]], *flags: str) -> Tuple[int, str, str]:
        argv = ["check"]
        for name, layer in layers:
            argv += ["--index", self.index(capsys, name, layer)]
        return run_lamina(capsys, *argv, *flags)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    require_docker()
    build_base_image()
    root = tmp_path_factory.mktemp("analysis")
    tags = {name: f"{PREFIX}/{name}:latest" for name in [*DOCKERFILES, "dyn-files", "dyn"]}
    try:
        for name, text in DOCKERFILES.items():
            build_image(tags[name], text)
        build_image(tags["dyn-files"], DYN_FILES_DOCKERFILE, _compile_dyn_context(root))
        build_image(tags["dyn"], DYN_DOCKERFILE.format(base=BASE_IMAGE, files=tags["dyn-files"]))
        tars = {name: docker_save(tags[name], root / f"{name}.tar") for name in [*DOCKERFILES, "dyn"]}
        tars["base"] = docker_save(BASE_IMAGE, root / "base.tar")
        yield Images(root, tars, tags)
    finally:
        for tag in tags.values():
            docker("image", "rm", "-f", tag, check=False, timeout=120)


# ----------------------------------------------------------------------------------------------
# 1. Two apt-like layers writing var/lib/dpkg/status
# ----------------------------------------------------------------------------------------------


def test_two_package_databases_conflict_by_name_with_both_layers(images: Images, capsys: pytest.CaptureFixture,
                                                                  tmp_path: Path) -> None:
    stack = [("base", "0"), ("apt-a", "-1"), ("apt-b", "-1")]
    report_json = tmp_path / "report.json"
    rc, out, err = images.check(capsys, stack, "--json", str(report_json))
    assert rc == 0, err
    (conflict,) = section(out, "conflicts")
    assert conflict.startswith("warning: /var/lib/dpkg/status differs (content) between [1] apt-a.tar layer 1 (sha256:")
    assert "[2] apt-b.tar layer 1 (sha256:" in conflict and "the top one, [2], wins" in conflict
    assert "var/lib/dpkg/status is a package database (dpkg): the top layer's copy hides the packages" in conflict
    assert section(out, "whiteouts") == [] and section(out, "hard links") == []
    doc = json.loads(report_json.read_text())
    (finding,) = doc["findings"]
    assert (finding["paths"], finding["layers"], finding["winner"]) == (["var/lib/dpkg/status"], [1, 2], 2)
    assert [s["source"] for s in doc["stack"]] == ["base.tar", "apt-a.tar", "apt-b.tar"]

    # Policy: the same stack fails with on_conflict=error, passes when the path is allowed.
    rc, out, err = images.check(capsys, stack, "--on-conflict", "error")
    assert rc == 2, err
    head, finding = err.splitlines()  # the count, then the finding itself
    assert head == "lamina: error: composition check failed: 1 conflict:"
    assert finding.startswith("  error: /var/lib/dpkg/status differs (content) between [0] ") or finding.startswith(
        "  error: /var/lib/dpkg/status differs (content) between [1] "), finding
    assert "apt-a.tar" in finding and "apt-b.tar" in finding and "package database (dpkg)" in finding, finding
    rc, out, _ = images.check(capsys, stack, "--on-conflict", "error", "--allow", "/var/lib/dpkg/*")
    assert rc == 0 and section(out, "conflicts") == []
    # One image on its own: its layer was built on the base, so it overrides nothing it did not know.
    rc, out, _ = images.check(capsys, [("base", "0"), ("apt-a", "-1")])
    assert rc == 0 and section(out, "conflicts") == []


def test_scanning_an_extracted_bundle_gives_the_same_entries(images: Images, capsys: pytest.CaptureFixture,
                                                             tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    lamina_ok(capsys, "extract", f"docker-archive:{images.tars['apt-a']}", "--layer", "-1", "--out", str(bundle),
              "--name", "apt-a.tar")
    out = tmp_path / "bundle.json"
    summary = json.loads(lamina_ok(capsys, "scan", str(bundle), "--out", str(out)))
    assert [l["index"] for l in summary["layers"]] == [1] and summary["skipped"] == []
    from lamina.analyze.index import read_index

    (from_bundle,) = read_index(str(out))
    (from_tar,) = read_index(images.index(capsys, "apt-a", "-1"))
    assert from_bundle.entries == from_tar.entries and from_bundle.below == from_tar.below
    assert (from_bundle.source, from_bundle.digest) == ("apt-a.tar", from_tar.digest)


def test_layers_conflicts_on_the_composed_image(images: Images, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    apt = {
        "base": f"docker-archive:{images.tars['base']}",
        "layers": [{"source": f"docker-archive:{images.tars['apt-a']}", "layer": "-1"},
                   {"source": f"docker-archive:{images.tars['apt-b']}", "layer": "-1"}],
    }
    # Merged (the default), the database conflict is resolved by the merge layer on top.
    spec.write_text(json.dumps(apt))
    composed = tmp_path / "composed.tar"
    lamina_ok(capsys, "compose", str(spec), "--out", str(composed))
    (merged,) = section(lamina_ok(capsys, "layers", str(composed), "--conflicts"), "conflicts")
    assert merged.startswith("info: /var/lib/dpkg/status differs between [1] ") and "merged: [3] " in merged, merged
    # Unmerged, the top layer's copy wins and the conflict says so.
    spec.write_text(json.dumps({**apt, "merge_package_databases": False}))
    lamina_ok(capsys, "compose", str(spec), "--out", str(composed))
    out = lamina_ok(capsys, "layers", str(composed), "--conflicts")
    (conflict,) = section(out, "conflicts")
    assert conflict.startswith("warning: /var/lib/dpkg/status differs (content) between [1] ")
    assert "and [2] " in conflict and "the top one, [2], wins" in conflict and "package database (dpkg)" in conflict
    doc = json.loads(lamina_ok(capsys, "layers", str(composed), "--conflicts", "--json"))
    (finding,) = doc["conflicts"]
    assert finding["paths"] == ["var/lib/dpkg/status"] and finding["layers"] == [1, 2]
    # The source images on their own have no conflicts.
    for name in ("apt-a", "apt-b"):
        assert section(lamina_ok(capsys, "layers", str(images.tars[name]), "--conflicts"), "conflicts") == []

    # A layer that replaces a base file it was built on is no conflict, in the composed image too:
    # the image records which of its layers the added one was built on.
    spec.write_text(json.dumps({
        "base": f"docker-archive:{images.tars['base']}",
        "layers": [{"source": f"docker-archive:{images.tars['echo-other']}", "layer": "-1"}],
    }))
    lamina_ok(capsys, "compose", str(spec), "--out", str(composed))
    n = len(json.loads(lamina_ok(capsys, "layers", str(images.tars["base"]), "--json"))["layers"])
    with tarfile.open(composed) as tf:
        config_name = json.load(tf.extractfile("manifest.json"))[0]["Config"]  # type: ignore[arg-type]
        history = json.load(tf.extractfile(config_name))["history"]  # type: ignore[arg-type]
    assert history[-1]["comment"].endswith("; built on layers " + ("0" if n == 1 else f"0-{n - 1}")), history[-1]
    out = lamina_ok(capsys, "layers", str(composed), "--conflicts")
    assert section(out, "conflicts") == [], out  # without the record, /bin/echo would differ between [0] and [1]


# ----------------------------------------------------------------------------------------------
# 2. A whiteout made against another base
# ----------------------------------------------------------------------------------------------


def test_a_removal_of_content_from_a_layer_not_below_it_is_reported(images: Images,
                                                                    capsys: pytest.CaptureFixture) -> None:
    # base = echo-other (busybox + a layer providing its own /bin/echo), then rm-echo's top layer.
    rc, out, _ = images.check(capsys, [("echo-other", "0"), ("echo-other", "1"), ("rm-echo", "-1")])
    assert rc == 0
    (whiteout,) = section(out, "whiteouts")
    assert whiteout.startswith("warning: [2] rm-echo.tar layer 1 (sha256:")
    assert "removes /bin/echo, provided by [1] echo-other.tar layer 1 (sha256:" in whiteout
    assert "which was not below it in its source image" in whiteout
    # On the base it was built on, the same removal is what its author meant.
    rc, out, _ = images.check(capsys, [("base", "0"), ("rm-echo", "-1")])
    assert rc == 0 and section(out, "whiteouts") == []


# ----------------------------------------------------------------------------------------------
# 3. A library in a layer left out
# ----------------------------------------------------------------------------------------------


def test_a_binary_whose_library_layer_is_left_out_is_reported(images: Images, capsys: pytest.CaptureFixture) -> None:
    # The fixture is real: the whole image runs the binary.
    run = docker("run", "--rm", "--network", "none", images.tags["dyn"], "/usr/bin/hello", check=False)
    assert run.returncode == 0, run.stderr

    without = [("dyn", "0"), ("dyn", "1"), ("dyn", "3")]
    rc, out, _ = images.check(capsys, without)
    assert rc == 0
    (missing,) = section(out, "missing libraries")
    assert missing.startswith("warning: /usr/bin/hello from [2] dyn.tar layer 3 (sha256:")
    assert "libfoo.so not found on its library path" in missing

    rc, out, _ = images.check(capsys, [("dyn", "0"), ("dyn", "1"), ("dyn", "2"), ("dyn", "3")])
    assert rc == 0 and section(out, "missing libraries") == []
    rc, out, _ = images.check(capsys, without, "--no-check-dependencies")
    assert rc == 0 and section(out, "missing libraries") == []


# ----------------------------------------------------------------------------------------------
# 4. History with empty entries
# ----------------------------------------------------------------------------------------------


def test_layers_maps_created_by_to_layers_past_empty_history_entries(images: Images,
                                                                    capsys: pytest.CaptureFixture) -> None:
    doc = json.loads(lamina_ok(capsys, "layers", str(images.tars["history"]), "--json"))
    created = [l["created_by"] for l in doc["layers"]]
    assert len(created) == 3
    assert "h-one" in created[1] and "h-two" in created[2]
    assert not any(word in c for c in created for word in ("ENV", "CMD", "LABEL"))
    diff_ids = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", images.tags["history"]).stdout)
    assert [l["diff_id"] for l in doc["layers"]] == diff_ids
    text = lamina_ok(capsys, "layers", str(images.tars["history"]))
    assert "h-one" in text.splitlines()[2] and "h-two" in text.splitlines()[3]


# ----------------------------------------------------------------------------------------------
# 5. The same checks through `pants package`, with the composed_image policy fields
# ----------------------------------------------------------------------------------------------

PANTS_BUILD = """
docker_layer(name="rm_echo", image="rm-echo.tar", layer=-1)
docker_layer(name="libc", image="dyn.tar", layer=1)
docker_layer(name="libfoo", image="dyn.tar", layer=2)
docker_layer(name="hello", image="dyn.tar", layer=3)
docker_layer(name="apt_a", image="apt-a.tar", layer=-1)
docker_layer(name="apt_b", image="apt-b.tar", layer=-1)

composed_image(name="whiteout", base="echo-other.tar", layers=[":rm_echo"])
composed_image(name="nolib", base="base.tar", layers=[":libc", ":hello"])
composed_image(name="withlib", base="base.tar", layers=[":libc", ":libfoo", ":hello"])
composed_image(name="unchecked", base="base.tar", layers=[":libc", ":hello"], check_dependencies=False)
composed_image(name="allowed", base="base.tar", layers=[":apt_a", ":apt_b"], on_conflict="error",
               allowed_conflicts=["/var/lib/dpkg/*"])

# The image's own files are checked too: its binary needs libfoo.so.
files(name="app", sources=["hello", "build-id"])
composed_image(name="ownbin", base="base.tar", layers=[":libc"], files=[":app"], files_dest="/usr/local/bin")
composed_image(name="ownbin_lib", base="base.tar", layers=[":libc", ":libfoo"], files=[":app"],
               files_dest="/usr/local/bin")
# Only files, on scratch: still checked (nothing provides the binary's loader and libraries).
composed_image(name="ownbin_scratch", base="scratch", platform="linux/amd64", files=[":app"],
               files_dest="/usr/local/bin")
"""


def _findings(stderr: str, address: str) -> List[str]:
    """The finding lines `pants package` showed for one target ([] when it showed none): they follow
    the package's `Wrote ...` line, or, from `pants run`, a log line's prefix."""
    import re

    match = re.search(rf"(?:^|\] ){re.escape(address)}: composition check found \d+ issue\(s\):\n((?:  .*\n?)*)",
                      stderr, flags=re.MULTILINE)
    return [line.strip() for line in match.group(1).splitlines()] if match else []


def test_pants_package_reports_whiteouts_and_missing_libraries_per_target(images: Images,
                                                                         tmp_path: Path) -> None:
    from lamina_tests.support.sample_repo import SampleRepo

    repo = SampleRepo(tmp_path / "repo")
    (repo.root / "checks").mkdir()
    for name in ("base", "echo-other", "rm-echo", "dyn", "apt-a", "apt-b"):
        os.link(images.tars[name], repo.root / "checks" / f"{name}.tar")
    shutil.copy(images.dir / "hello", repo.root / "checks" / "hello")
    repo.write("checks/build-id", uuid.uuid4().hex)  # fresh files: their layer is not in this machine's Pants cache
    repo.write("checks/BUILD", PANTS_BUILD)
    result = repo.pants("package", "checks::")
    err = result.stderr

    (whiteout,) = _findings(err, "checks:whiteout")
    # The base is echo-other's two layers, so rm-echo's layer is [2] and the /bin/echo it removes is [1]'s.
    assert whiteout.startswith("warning: [2] checks/rm-echo.tar layer 1 (sha256:"), whiteout
    assert "removes /bin/echo, provided by [1] checks/echo-other.tar layer 1" in whiteout, whiteout

    (missing,) = _findings(err, "checks:nolib")
    assert missing.startswith("warning: /usr/bin/hello from [2] checks/dyn.tar layer 3"), missing
    assert "libfoo.so not found on its library path" in missing, missing
    assert _findings(err, "checks:withlib") == [], err  # the library's layer is in the stack
    assert _findings(err, "checks:unchecked") == [], err  # check_dependencies=False
    assert _findings(err, "checks:allowed") == [], err  # on_conflict="error", but the path is allowed
    (own,) = _findings(err, "checks:ownbin")
    assert own.startswith("warning: /usr/local/bin/hello from [2] files of checks:ownbin (sha256:"), own
    assert "libfoo.so not found on its library path" in own, own
    assert _findings(err, "checks:ownbin_lib") == [], err  # libfoo.so's layer is in the stack
    # The files layer is made once, by its own process; the check's finding and the image name the same layer.
    from lamina.sources import open_image
    from lamina_tests.support.sample_repo import completed_processes

    ran = completed_processes(err)
    assert sorted(p for p in ran if "files" in p) == ["lamina: files layer of checks:ownbin",
                                                      "lamina: files layer of checks:ownbin_lib",
                                                      "lamina: files layer of checks:ownbin_scratch"], ran
    alone = _findings(err, "checks:ownbin_scratch")
    assert any(f.startswith("warning: /usr/local/bin/hello from [0] files of checks:ownbin_scratch (sha256:")
               and "libfoo.so" in f and "not found on its library path" in f for f in alone), alone
    top = json.loads((repo.root / "dist" / "checks" / "ownbin.layers.json").read_text())["layers"][-1]
    assert top["selector"] == "files" and f"files of checks:ownbin ({top['digest'][:19]})" in own, (own, top)
    assert open_image(str(repo.root / "dist" / "checks" / "ownbin.tar")).diff_ids[-1] == top["diff_id"]
    for name in ("whiteout", "nolib", "withlib", "unchecked", "allowed", "ownbin", "ownbin_lib"):
        assert (repo.root / "dist" / "checks" / f"{name}.tar").is_file(), name


def test_pants_package_fails_on_a_hard_link_whose_target_is_not_in_the_stack(images: Images,
                                                                             tmp_path: Path) -> None:
    from lamina.sources import open_image
    from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
    from lamina_tests.support.sample_repo import SampleRepo

    # An archive made from files: its top layer hard-links a file that its lower layer holds.
    arch = open_image(str(images.tars["base"])).platform.architecture
    linked = FakeImage([FakeLayer({"opt/": None, "opt/target": b"t"}, "ADD target /opt/"),
                        FakeLayer({"opt/": None, "opt/link": "=>opt/target"}, "RUN ln /opt/target /opt/link")],
                       architecture=arch)
    repo = SampleRepo(tmp_path / "repo")
    (repo.root / "links").mkdir()
    write_docker_classic({"linked:1": linked}, str(repo.root / "links" / "linked.tar"))
    os.link(images.tars["base"], repo.root / "links" / "base.tar")
    repo.write("links/BUILD", """
docker_layer(name="link", image="linked.tar", layer=-1)
docker_layer(name="both", image="linked.tar", layer=":")
composed_image(name="broken", base="base.tar", layers=[":link"])
composed_image(name="whole", base="base.tar", layers=[":both"])
""")
    broken = repo.pants("package", "links:broken", check=False)
    output = broken.stdout + broken.stderr
    assert broken.returncode != 0, output
    assert "links:broken" in output and "broken hard link" in output, output
    (finding,) = [l.strip() for l in output.splitlines() if l.strip().startswith("error: ")]
    assert "/opt/link" in finding and "/opt/target" in finding, output
    assert "Traceback" not in output, output
    assert not list((repo.root / "dist").rglob("broken*")), list((repo.root / "dist").rglob("*"))

    whole = repo.pants("package", "links:whole")  # with the target's layer below it, the link holds
    assert _findings(whole.stderr, "links:whole") == [], whole.stderr
    assert (repo.root / "dist" / "links" / "whole.tar").is_file()


START_BUILD = """
docker_layer(name="greet", image="script.tar", layer=-1)

# The script's layer without the base it was built on: nothing provides /bin/sh.
composed_image(name="nosh", base="scratch", platform="{platform}", layers=[":greet"],
               cmd=["/usr/local/bin/greet"], on_start_failure="error")
composed_image(name="nosh_warn", base="scratch", platform="{platform}", layers=[":greet"], cmd=["greet"],
               repository="{prefix}/nosh")
# On the busybox base: /bin/sh is there, and `greet` is found on the base's PATH.
composed_image(name="withsh", base="base.tar", layers=[":greet"], cmd=["greet"], on_start_failure="error",
               repository="{prefix}/withsh")
"""


def test_pants_package_checks_the_start_command_and_the_engine_agrees(images: Images, tmp_path: Path) -> None:
    from lamina.sources import open_image
    from lamina_tests.support.sample_repo import SampleRepo

    repo = SampleRepo(tmp_path / "repo")
    (repo.root / "starts").mkdir()
    for name in ("base", "script"):
        os.link(images.tars[name], repo.root / "starts" / f"{name}.tar")
    platform = open_image(str(images.tars["base"])).platform
    repo.write("starts/BUILD", START_BUILD.format(platform=f"{platform.os}/{platform.architecture}", prefix=PREFIX))

    failed = repo.pants("package", "starts:nosh", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert "starts:nosh: composition check failed: 1 start command that cannot start:" in output, output
    (finding,) = [l.strip() for l in output.splitlines() if l.strip().startswith("error: ")]
    assert finding.startswith('error: start command ["/usr/local/bin/greet"]: /usr/local/bin/greet from '
                              "[0] starts/script.tar layer "), finding
    assert "is a '#!/bin/sh' script and its interpreter is missing: no layer provides /bin/sh" in finding, finding
    assert "Traceback" not in output, output
    assert not list((repo.root / "dist").rglob("nosh.*")), list((repo.root / "dist").rglob("*"))

    built = repo.pants("package", "starts:nosh_warn", "starts:withsh")
    (warning,) = _findings(built.stderr, "starts:nosh_warn")
    assert warning.startswith('warning: start command ["greet"]: /usr/local/bin/greet from [0] starts/script.tar layer '), warning
    assert "no layer provides /bin/sh" in warning, warning
    assert _findings(built.stderr, "starts:withsh") == [], built.stderr
    # The engine agrees with both verdicts.
    refs = [f"{PREFIX}/withsh:latest", f"{PREFIX}/nosh:latest"]
    try:
        for name in ("withsh", "nosh_warn"):
            docker("load", "-i", str(repo.root / "dist" / "starts" / f"{name}.tar"), timeout=120)
        ran = docker("run", "--rm", "--network", "none", refs[0], check=False)
        assert (ran.returncode, ran.stdout.strip()) == (0, "started"), ran.stderr
        ran = docker("run", "--rm", "--network", "none", refs[1], check=False)
        assert ran.returncode != 0 and "no such file or directory" in ran.stderr, (ran.returncode, ran.stderr)
    finally:
        for ref in refs:
            docker("image", "rm", "-f", ref, check=False, timeout=120)


def test_without_gcc_these_tests_fail_under_ci_and_skip_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI: needs gcc"):
        _compile_dyn_context(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs gcc"):
        _compile_dyn_context(tmp_path)
