"""Tests of the completeness check: ELF interpreters and libraries, via RUNPATH, ld.so.conf, musl paths."""
from __future__ import annotations

from typing import Mapping

from lamina.analyze.check import check
from lamina.analyze.report import Finding, Policy
from lamina_testing.elffiles import make_elf
from lamina_testing.images import FakeImage, FakeLayer, FileValue
from lamina_testing.stacks import indexes

INTERP = "/lib64/ld-linux-x86-64.so.2"
LIBC = make_elf(soname="libc.so.6", needed=["ld-linux-x86-64.so.2"])
LOADER = make_elf(soname="ld-linux-x86-64.so.2")
# A Debian-like libc layer: multiarch directory, /lib64 loader link, ld.so.conf with an include.
LIBC_LAYER = FakeLayer({
    "lib/": None, "lib/x86_64-linux-gnu/": None,
    "lib/x86_64-linux-gnu/libc.so.6": LIBC,
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": LOADER,
    "lib64/": None, "lib64/ld-linux-x86-64.so.2": "->/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "etc/": None, "etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n",
    "etc/ld.so.conf.d/": None,
}, "ADD libc")
APP = make_elf(type="exec", interp=INTERP, needed=["libfoo.so.1", "libc.so.6"])
LIBFOO = make_elf(soname="libfoo.so.1", needed=["libc.so.6"])


def _missing(*layers: Mapping[str, FileValue], policy: Policy = Policy()) -> list[Finding]:
    image = FakeImage([LIBC_LAYER, *[FakeLayer(dict(l)) for l in layers]])
    return list(check(indexes(image, "img"), policy).of_kind("missing-library"))


def _app(extra: Mapping[str, FileValue] = {}) -> dict[str, FileValue]:
    return {"usr/": None, "usr/bin/": None, "usr/bin/app": APP, **extra}


def test_a_complete_image_has_no_missing_libraries() -> None:
    libfoo = {"usr/": None, "usr/lib/": None, "usr/lib/libfoo.so.1.2": LIBFOO, "usr/lib/libfoo.so.1": "->libfoo.so.1.2"}
    assert _missing(libfoo, _app()) == []


def test_a_library_left_out_is_reported_with_the_binary_and_the_library() -> None:
    (finding,) = _missing(_app())
    assert finding.paths == ("usr/bin/app",) and finding.missing == ("libfoo.so.1",) and finding.severity == "warning"
    assert finding.message.startswith("/usr/bin/app from [1] img layer 1 (sha256:")
    assert "libfoo.so.1 not found on its library path" in finding.message


def test_a_missing_interpreter_is_reported() -> None:
    image = FakeImage([FakeLayer(_app({"usr/lib/": None, "usr/lib/libfoo.so.1": LIBFOO}))])
    findings = check(indexes(image, "img")).of_kind("missing-library")
    app = next(f for f in findings if f.paths == ("usr/bin/app",))
    assert app.missing == (INTERP, "libc.so.6")
    assert f"its interpreter {INTERP} is missing and libc.so.6 not found" in app.message


def test_a_symlink_chain_must_end_in_a_file() -> None:
    dangling = {"usr/": None, "usr/lib/": None, "usr/lib/libfoo.so.1": "->libfoo.so.1.2"}
    to_dir = {"usr/": None, "usr/lib/": None, "usr/lib/libfoo.so.1/": None}
    assert [f.missing for f in _missing(dangling, _app())] == [("libfoo.so.1",)]
    assert [f.missing for f in _missing(to_dir, _app())] == [("libfoo.so.1",)]


def test_a_library_removed_by_a_later_layer_is_missing() -> None:
    libfoo = {"usr/": None, "usr/lib/": None, "usr/lib/libfoo.so.1": LIBFOO}
    assert [f.missing for f in _missing(libfoo, _app(), {"usr/lib/.wh.libfoo.so.1": b""})] == [("libfoo.so.1",)]


def test_runpath_with_origin_is_searched() -> None:
    app = make_elf(type="exec", interp=INTERP, needed=["libfoo.so.1"], runpath="$ORIGIN/../lib")
    layer = {"opt/": None, "opt/app/": None, "opt/app/bin/": None, "opt/app/bin/app": app,
             "opt/app/lib/": None, "opt/app/lib/libfoo.so.1": LIBFOO}
    assert _missing(layer) == []
    assert len(_missing({k: v for k, v in layer.items() if k != "opt/app/lib/libfoo.so.1"})) == 1


def test_ld_so_conf_includes_are_followed() -> None:
    app = make_elf(type="exec", interp=INTERP, needed=["libfoo.so.1"])
    layer = {"etc/": None, "etc/ld.so.conf.d/": None, "etc/ld.so.conf.d/app.conf": b"# app\n/opt/lib\n",
             "opt/": None, "opt/lib/": None, "opt/lib/libfoo.so.1": LIBFOO, "opt/bin/": None, "opt/bin/app": app}
    assert _missing(layer) == []
    unlisted = {**layer, "etc/ld.so.conf.d/app.conf": b"/elsewhere\n"}
    assert [f.missing for f in _missing(unlisted)] == [("libfoo.so.1",)]


def test_a_library_of_another_class_does_not_count() -> None:
    lib32 = make_elf(bits=32, soname="libfoo.so.1")
    assert [f.missing for f in _missing({"usr/": None, "usr/lib/": None, "usr/lib/libfoo.so.1": lib32}, _app())] == [
        ("libfoo.so.1",)]


def test_a_librarys_neighbours_count_and_other_machines_are_skipped() -> None:
    plugin = make_elf(needed=["libhelper.so"])
    arm = make_elf(type="exec", machine=183, interp="/lib/ld-linux-aarch64.so.1", needed=["libnothere.so"])
    layer = {"opt/": None, "opt/p/": None, "opt/p/plugin.so": plugin, "opt/p/libhelper.so": make_elf(),
             "opt/arm": arm}
    assert _missing(layer) == []


def test_the_check_can_be_turned_off() -> None:
    assert _missing(_app(), policy=Policy(check_dependencies=False)) == []


def test_a_needed_entry_with_a_slash_is_a_path() -> None:
    needed = "/opt/libabs.so"
    app = make_elf(type="exec", interp=INTERP, needed=[needed])
    assert [f.missing for f in _missing(_app({"usr/bin/app": app}))] == [(needed,)]
    assert _missing(_app({"usr/bin/app": app, "opt/": None, "opt/libabs.so": make_elf()})) == []


def test_musl_path_files_add_library_directories() -> None:
    # An Alpine-like image: musl's loader reads /etc/ld-musl-<arch>.path (newline or colon separated).
    app = make_elf(type="exec", interp=INTERP, needed=["libfoo.so.1"])
    layer = {"etc/": None, "etc/ld-musl-x86_64.path": b"/lib:/usr/lib\n/opt/musl\n",
             "opt/": None, "opt/musl/": None, "opt/musl/libfoo.so.1": LIBFOO, "opt/bin/": None, "opt/bin/app": app}
    assert _missing(layer) == []
    assert [f.missing for f in _missing({**layer, "etc/ld-musl-x86_64.path": b"/lib:/usr/lib\n"})] == [("libfoo.so.1",)]
