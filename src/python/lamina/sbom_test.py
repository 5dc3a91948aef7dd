"""Tests of the SBOM of a composed image: every installed package with its version, architecture,
purl and the layer that brought it; the document valid CycloneDX 1.5 and byte-identical for the
same inputs; the same from a `lamina package-db-layer` directory as from compose's own walk."""
from __future__ import annotations

import json

import pytest

from lamina import sbom
from lamina.build import build
from lamina.cli import main
from lamina.sources import open_image
from lamina.spec import parse_spec
from lamina_testing.images import FakeImage, FakeLayer, write_oci_dir

from lamina.pkgdb_test import BASE_PKGS, CURL, GCC, db, dpkg

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
BASE_LAYER = FakeLayer({"var/": None, "var/lib/": None, "var/lib/dpkg/": None,
                        "var/lib/dpkg/status": db(*BASE_PKGS, dpkg("gone", "1", status="deinstall ok config-files")),
                        "usr/": None, "usr/lib/": None, "usr/lib/os-release": OS_RELEASE, "bin/sh": b"sh"},
                       "ADD base /", "gzip")


def _sources(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for name, fake in (("base", FakeImage([BASE_LAYER])), ("curl", FakeImage([BASE_LAYER, CURL.layers[1]])),
                       ("gcc", FakeImage([BASE_LAYER, GCC.layers[1]]))):
        write_oci_dir(fake, str(tmp_path / name))
        out[name] = "oci:" + str(tmp_path / name)
    return out


def _spec(sources: dict[str, str], *names: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"base": sources["base"], "format": "oci", "tags": ["app:1"], "target": "//:app",
            "layers": [{"source": sources[n], "layer": "-1", "target": f"//:{n}"} for n in names], **extra}


def _packages(doc: dict) -> dict[str, dict]:
    out = {}
    for c in doc["components"]:
        if c["type"] == "library":
            out[c["name"]] = {**c, "props": {p["name"]: p["value"] for p in c.get("properties", [])}}
    return out


def _validate(text: str) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    import jsonschema  # the validator imports it lazily; named here so Pants infers the dependency
    del jsonschema

    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "merge-off"])
def test_every_package_names_the_layer_that_brought_it(tmp_path, merge) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    path = tmp_path / "app.cdx.json"
    image = build(parse_spec(_spec(sources, "curl", "gcc", merge_package_databases=merge)), str(tmp_path / "out"),
                  sbom=str(path))
    text = path.read_text()
    _validate(text)
    doc = json.loads(text)
    assert doc["specVersion"] == "1.5" and doc["bomFormat"] == "CycloneDX"
    base, curl, gcc = (open_image(sources[n]).layers[-1].descriptor.digest for n in ("base", "curl", "gcc"))
    pkgs = _packages(doc)
    if merge:  # the merged database lists them all; without the merge the top copy (gcc's) is what dpkg sees
        assert sorted(pkgs) == ["base-files", "cpp-12", "curl", "gcc-12", "libc6"]  # "gone" is not installed
    else:
        assert sorted(pkgs) == ["base-files", "cpp-12", "gcc-12", "libc6"]
    by_layer = {n: p["props"]["lamina:layer:digest"] for n, p in pkgs.items()}
    assert by_layer["libc6"] == by_layer["base-files"] == base  # listed by every copy: the base's
    assert by_layer["gcc-12"] == by_layer["cpp-12"] == gcc
    gcc12 = pkgs["gcc-12"]
    assert gcc12["version"] == "12.2" and gcc12["props"]["lamina:package:architecture"] == "amd64"
    assert gcc12["purl"] == "pkg:deb/debian/gcc-12@12.2?arch=amd64&distro=debian-12"
    assert gcc12["props"]["lamina:layer:target"] == "//:gcc" and gcc12["props"]["lamina:layer:source"] == sources["gcc"]
    if merge:
        assert by_layer["curl"] == curl and pkgs["curl"]["props"]["lamina:layer:target"] == "//:curl"
    # the layers are components too, the image (metadata.component) depends on them, each on its packages
    layers = [c for c in doc["components"] if c["type"] == "file"]
    assert sorted(c["name"] for c in layers) == sorted(l.descriptor.digest for l in image.layers)
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert sorted(deps["image"]) == sorted(c["bom-ref"] for c in layers)
    gcc_ref = next(c["bom-ref"] for c in layers if c["name"] == gcc)
    assert sorted(deps[gcc_ref]) == sorted([pkgs["gcc-12"]["bom-ref"], pkgs["cpp-12"]["bom-ref"]])
    assert doc["metadata"]["component"]["version"] == image.manifest_descriptor.digest
    assert doc["metadata"]["component"]["name"] == "app:1"
    assert doc["metadata"]["timestamp"].startswith("1970-01-01T00:00:00")  # the image's `created`
    # deterministic: the same inputs give the same bytes (the serial number from the manifest digest)
    again = tmp_path / "again.cdx.json"
    build(parse_spec(_spec(sources, "curl", "gcc", merge_package_databases=merge)), None, sbom=str(again))
    assert again.read_bytes() == path.read_bytes()


def test_the_sbom_from_a_package_db_layer_directory_is_the_same(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    (tmp_path / "stack.json").write_text(json.dumps(_spec(sources, "curl", "gcc")))
    assert main(["package-db-layer", str(tmp_path / "stack.json"), "--out", str(tmp_path / "pdb")]) == 0
    assert (tmp_path / "pdb" / "packages.json").exists()
    (tmp_path / "spec.json").write_text(json.dumps(_spec(sources, "curl", "gcc", package_db_layer=str(tmp_path / "pdb"))))
    assert main(["compose", str(tmp_path / "spec.json"), "--sbom", str(tmp_path / "a.cdx.json")]) == 0
    build(parse_spec(_spec(sources, "curl", "gcc")), None, sbom=str(tmp_path / "b.cdx.json"))
    assert (tmp_path / "a.cdx.json").read_bytes() == (tmp_path / "b.cdx.json").read_bytes()
    # --no-merge: the inventory only, no layer; the SBOM then lists what the top copy lists
    assert main(["package-db-layer", str(tmp_path / "stack.json"), "--out", str(tmp_path / "nm"), "--no-merge"]) == 0
    meta = json.loads((tmp_path / "nm" / "package-db-layer.json").read_text())
    assert meta["layer"] is None and meta["report"]["merged"] == []
    (tmp_path / "spec2.json").write_text(json.dumps(_spec(sources, "curl", "gcc", package_db_layer=str(tmp_path / "nm"))))
    assert main(["compose", str(tmp_path / "spec2.json"), "--sbom", str(tmp_path / "c.cdx.json")]) == 0
    build(parse_spec(_spec(sources, "curl", "gcc", merge_package_databases=False)), None,
          sbom=str(tmp_path / "d.cdx.json"))
    assert (tmp_path / "c.cdx.json").read_bytes() == (tmp_path / "d.cdx.json").read_bytes()


def test_apk_packages_and_the_files_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def apk(name: str, version: str) -> str:
        return f"C:Q1abc=\nP:{name}\nV:{version}\nA:x86_64\nS:100\nT:{name} package\n"

    alpine = FakeLayer({"etc/": None, "etc/os-release": b"ID=alpine\nVERSION_ID=3.19.1\n", "lib/": None,
                        "lib/apk/": None, "lib/apk/db/": None,
                        "lib/apk/db/installed": db(apk("musl", "1.2.4-r2"), apk("busybox", "1.36.1-r15"))},
                       "ADD alpine /", "gzip")
    write_oci_dir(FakeImage([alpine]), str(tmp_path / "alpine"))
    (tmp_path / "hello.txt").write_text("hello")
    spec = {"base": "oci:" + str(tmp_path / "alpine"), "format": "oci", "tags": ["a:1"],
            "files": [{"src": str(tmp_path / "hello.txt"), "dest": "/hello.txt"}]}
    image = build(parse_spec(spec), str(tmp_path / "out"), sbom=str(tmp_path / "a.cdx.json"))
    text = (tmp_path / "a.cdx.json").read_text()
    _validate(text)
    doc = json.loads(text)
    pkgs = _packages(doc)
    assert pkgs["musl"]["purl"] == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
    assert pkgs["busybox"]["props"]["lamina:layer:digest"] == image.layers[0].descriptor.digest
    files = [c for c in doc["components"] if c["name"] == image.layers[1].descriptor.digest]
    assert len(files) == 1 and {p["name"]: p["value"] for p in files[0]["properties"]}["lamina:layer:selector"] == "files"


def test_attribution_rule() -> None:
    def inv(digest: str, *pkgs: tuple[str, str]) -> sbom.LayerInventory:
        return sbom.LayerInventory(digest, (("var/lib/dpkg/status", tuple(
            sbom.Package("dpkg", n, "amd64", v, "install ok installed") for n, v in pkgs)),))

    stack = [inv("base", ("libc6", "1"), ("ssl", "1")), None,
             inv("top", ("libc6", "1"), ("ssl", "2"), ("curl", "7"))]
    got = {a.package.name: (a.package.version, a.layer) for a in sbom.attribute(stack)}
    # unchanged from the base: the base's; upgraded above it: the upgrading layer's
    assert got == {"libc6": ("1", 0), "ssl": ("2", 2), "curl": ("7", 2)}


def test_purls_and_os_release() -> None:
    p = sbom.Package("dpkg", "curl", "amd64", "7.88.1-10+deb12u5", "install ok installed")
    assert sbom.purl_of(p, {}) == "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64"
    ubuntu = sbom.parse_os_release('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n# a comment\n')
    assert sbom.purl_of(p, ubuntu) == "pkg:deb/ubuntu/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=ubuntu-22.04"
    # an os-release of another family names no distro for the package
    assert sbom.purl_of(p, {"ID": "alpine"}) == "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64"


def test_an_inventory_round_trips_and_a_bad_one_is_an_error() -> None:
    from lamina.errors import InvalidSource

    inv = sbom.Inventory({"sha256:1": sbom.LayerInventory("sha256:1", (("lib/apk/db/installed", (
        sbom.Package("apk", "musl", "x86_64", "1.2.4-r2"),)),), (("etc/os-release", "ID=alpine\n"),))}, ["sha256:2"])
    assert sbom.read_inventory(json.loads(json.dumps(inv.to_json())), "x") == inv
    for bad in ({}, {"format": sbom.INVENTORY_FORMAT, "layers": [{"digest": "d", "databases": {"etc/x": []}}]},
                {"format": sbom.INVENTORY_FORMAT, "layers": [{"digest": "d", "databases": {"lib/apk/db/installed": [1]}}]}):
        with pytest.raises(InvalidSource):
            sbom.read_inventory(bad, "x")


def test_distroless_status_d_files_are_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = {"var/": None, "var/lib/": None, "var/lib/dpkg/": None, "var/lib/dpkg/status.d/": None}
    base = FakeLayer({**d, "var/lib/dpkg/status.d/base-files": db(dpkg("base-files", "12.4")),
                      "var/lib/dpkg/status.d/libc6": db(dpkg("libc6", "2.36-9")),
                      "var/lib/dpkg/status.d/libc6.md5sums": b"0123  lib/libc.so.6\n",
                      "etc/": None, "etc/os-release": OS_RELEASE}, "ADD distroless /", "gzip")
    tz = FakeLayer({"var/lib/dpkg/status.d/tzdata": db(dpkg("tzdata", "2024a", arch="all"))}, "ADD tzdata /", "gzip")
    write_oci_dir(FakeImage([base]), str(tmp_path / "base"))
    write_oci_dir(FakeImage([base, tz]), str(tmp_path / "tz"))
    spec = {"base": "oci:" + str(tmp_path / "base"), "format": "oci", "tags": ["d:1"],
            "layers": [{"source": "oci:" + str(tmp_path / "tz"), "layer": "-1", "target": "//:tz"}]}
    image = build(parse_spec(spec), None, sbom=str(tmp_path / "d.cdx.json"))
    text = (tmp_path / "d.cdx.json").read_text()
    _validate(text)
    pkgs = _packages(json.loads(text))
    assert sorted(pkgs) == ["base-files", "libc6", "tzdata"]
    assert pkgs["tzdata"]["props"]["lamina:layer:target"] == "//:tz"
    assert pkgs["tzdata"]["props"]["lamina:package:database"] == "/var/lib/dpkg/status.d/tzdata"
    assert pkgs["tzdata"]["purl"] == "pkg:deb/debian/tzdata@2024a?arch=all&distro=debian-12"
    assert pkgs["libc6"]["props"]["lamina:layer:digest"] == image.layers[0].descriptor.digest


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "merge-off"])
def test_apk_world_is_no_package_list(tmp_path, merge) -> None:  # type: ignore[no-untyped-def]
    """`etc/apk/world` (what was asked for) is merged with the databases but lists no installed
    package: the SBOM reads only `installed` (a regression: world went to the installed parser)."""
    def apk(name: str, version: str) -> str:
        return f"C:Q1abc=\nP:{name}\nV:{version}\nA:x86_64\nS:100\nT:{name} package\n"

    def alpine_layer(world: bytes, *pkgs: str, comment: str) -> FakeLayer:
        return FakeLayer({"etc/": None, "etc/apk/": None, "etc/apk/world": world, "lib/": None, "lib/apk/": None,
                          "lib/apk/db/": None, "lib/apk/db/installed": db(*pkgs)}, comment, "gzip")

    base = alpine_layer(b"busybox\n", apk("busybox", "1.36.1-r15"), comment="ADD alpine /")
    jq = alpine_layer(b"busybox\njq\n", apk("busybox", "1.36.1-r15"), apk("jq", "1.7.1-r0"), comment="apk add jq")
    yq = alpine_layer(b"busybox\nyq\n", apk("busybox", "1.36.1-r15"), apk("yq", "4.35.2-r0"), comment="apk add yq")
    sources = {}
    for name, fake in (("base", FakeImage([base])), ("jq", FakeImage([base, jq])), ("yq", FakeImage([base, yq]))):
        write_oci_dir(fake, str(tmp_path / name))
        sources[name] = "oci:" + str(tmp_path / name)
    spec = _spec(sources, "jq", "yq", merge_package_databases=merge)
    build(parse_spec(spec), str(tmp_path / "out"), sbom=str(tmp_path / "a.cdx.json"))
    text = (tmp_path / "a.cdx.json").read_text()
    _validate(text)
    names = set(_packages(json.loads(text)))
    assert names == ({"busybox", "jq", "yq"} if merge else {"busybox", "yq"}), names


def test_layers_packages_shows_what_each_layer_brought(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(_spec(sources, "curl", "gcc")))
    assert main(["layers", str(tmp_path / "spec.json"), "--packages", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    names = [sorted(p["name"] for p in r["packages"]) for r in rows]
    # base, curl's layer, gcc's layer, the merge layer (which brings nothing: it lists what they brought)
    assert names == [["base-files", "libc6"], ["curl"], ["cpp-12", "gcc-12"], []]
    curl = rows[1]["packages"][0]
    assert curl == {"manager": "dpkg", "name": "curl", "version": "7.88", "architecture": "amd64",
                    "database": "/var/lib/dpkg/status"}
    # a source image: its own layers
    assert main(["layers", sources["gcc"], "--packages"]) == 0
    text = capsys.readouterr().out
    assert "packages it brought (2):" in text and "gcc-12 12.2 amd64  (dpkg)" in text
    assert text.index("base-files 12.4") < text.index("gcc-12 12.2")


def test_a_stack_said_to_hold_no_package_database_reads_none_and_gives_the_same_sbom(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import lamina.build
    from lamina.errors import SpecError

    plain = {}
    for name, fake in (("base", FakeImage([FakeLayer({"bin/sh": b"sh"}, "ADD base /")])),
                       ("app", FakeImage([FakeLayer({"app/run": b"run"}, "COPY run /app")]))):
        write_oci_dir(fake, str(tmp_path / name))
        plain[name] = "oci:" + str(tmp_path / name)
    walked = build(parse_spec(_spec(plain, "app")), None, sbom=str(tmp_path / "walked.cdx.json"))
    for name in ("read_layer", "plan_for_layers"):  # told: no layer is read for a database
        monkeypatch.setattr(lamina.build, name, lambda *a, **k: pytest.fail("a layer was read for its databases"))
    told = build(parse_spec(_spec(plain, "app", package_databases=False)), None, sbom=str(tmp_path / "told.cdx.json"))
    assert told.manifest_descriptor == walked.manifest_descriptor
    assert (tmp_path / "told.cdx.json").read_bytes() == (tmp_path / "walked.cdx.json").read_bytes()
    with pytest.raises(SpecError, match="give no package_db_layer"):
        parse_spec(_spec(plain, "app", package_databases=False, package_db_layer=str(tmp_path)))
    with pytest.raises(SpecError, match="package_databases must be true or false"):
        parse_spec(_spec(plain, "app", package_databases="no"))
