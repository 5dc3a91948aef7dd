"""CI's short fuzz run: every target's seeds replayed under the contract, then each target fuzzed briefly."""
from __future__ import annotations

import os

import pytest

from lamina.errors import InvalidSource
from lamina_fuzz.bundle import decode, encode, write_dir, write_tar
from lamina_fuzz.contract import ContractViolation, Run, check
from lamina_fuzz.seeds import SEEDS, seeds_of
from lamina_fuzz.targets import TARGETS

# Per target. Each fuzzer process also spends ~2.5 s of CPU starting (atheris instruments lamina as
# it is imported); two run at a time, so the 15 targets take ~30 s on two idle cores.
CI_SECONDS = 1
CI_PARALLEL = 2


def test_every_target_has_seeds() -> None:
    assert set(SEEDS) == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_keep_the_contract(name: str) -> None:
    errors = [check(TARGETS[name], data) for data in seeds_of(name)]
    assert errors, f"{name} has no seeds"


@pytest.mark.parametrize("name", ["docker_archive", "oci_layout", "oci_archive", "archive_bytes", "registry",
                                  "layer_tar", "elf", "www_authenticate", "docker_config", "spec", "layer_index",
                                  "files_layer"])
def test_some_seed_reads_without_error(name: str) -> None:
    assert any(check(TARGETS[name], data) is None for data in seeds_of(name)), f"no seed of {name} is valid"


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("atheris")
    from concurrent.futures import ThreadPoolExecutor

    from lamina_fuzz.run import run_target

    root = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(CI_PARALLEL) as pool:
        runs = {name: pool.submit(run_target, name, CI_SECONDS, str(root / name / "corpus"), str(root / name / "crashes"))
                for name in sorted(TARGETS)}
        return {name: run.result() for name, run in runs.items()}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_fuzz_run_finds_no_crash(name: str, short_runs: dict) -> None:
    outcome = short_runs[name]
    assert not outcome.crashes, outcome.line()
    assert outcome.inputs > len(seeds_of(name)) and outcome.edges > 0, outcome.line() + "\n" + outcome.log[-2000:]


# -- the harness itself ----------------------------------------------------------------------------


def test_bundle_tokens_name_earlier_members_and_their_own_header() -> None:
    b = decode(encode([("a |gz", b"hello"), ("b-{h:1}", b"{d:0} {s:0} {u:0} {d:1}")]))
    a, second = b.members
    assert a.plain == b"hello" and a.content != b"hello"
    digest, size, plain, later = second.content.split()
    assert int(size) == len(a.content) and digest.startswith(b"sha256:") and later == b"{d:1}"
    assert second.name == "b-" + __import__("hashlib").sha256(second.content).hexdigest()


def test_bundle_options_symlinks_and_dirs() -> None:
    b = decode(encode([("@tag", b"v1"), ("d/", b""), ("l -> ../x", b"")]))
    assert b.option("tag") == "v1"
    assert [(m.name, m.kind, m.linkname) for m in b.members] == [("d/", "dir", ""), ("l", "symlink", "../x")]


def test_write_dir_never_writes_outside_its_root(tmp_path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_dir(decode(encode([("../escape", b"x"), ("/abs", b"x"), ("link -> " + str(outside), b""),
                             ("link/through", b"x"), ("ok/file", b"x")])), str(root))
    assert os.listdir(outside) == [] and not (tmp_path / "escape").exists()
    assert (root / "ok" / "file").read_bytes() == b"x"


def test_write_tar_keeps_hostile_names(tmp_path) -> None:
    import tarfile

    path = str(tmp_path / "a.tar")
    write_tar(decode(encode([("../up", b"x"), ("/abs", b"y")])), path)
    with tarfile.open(path) as tf:
        assert tf.getnames() == ["../up", "/abs"]


def test_the_contract_lets_one_line_lamina_errors_through() -> None:
    def target(data: bytes, run: Run) -> None:
        raise InvalidSource("bad input")

    assert str(check(target, b"")) == "bad input"


@pytest.mark.parametrize("failure", [
    lambda run: (_ for _ in ()).throw(InvalidSource("two\nlines")),
    lambda run: open(run.path("stray"), "w").close(),
    lambda run: open(os.path.join(run.out, ".lamina-tmp-x"), "w").close(),
], ids=["multi-line-error", "file-outside-out", "temporary-left-behind"])
def test_the_contract_catches_violations(failure) -> None:
    def target(data: bytes, run: Run) -> None:
        run.inputs_written()
        failure(run)

    with pytest.raises(ContractViolation):
        check(target, b"")


def test_other_exceptions_are_findings() -> None:
    def target(data: bytes, run: Run) -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        check(target, b"")


def test_the_json_mutator_changes_one_document_and_keeps_size_tokens() -> None:
    from lamina_fuzz.mutator import custom_mutator

    seed = seeds_of("docker_archive")[0]
    mutate = custom_mutator(lambda data, size: data)  # the byte mutations: none here
    changed = [out for out in (mutate(seed, 1 << 16, s) for s in range(40)) if out != seed]
    assert changed and all(out.count(b"\n%%\n") == seed.count(b"\n%%\n") for out in changed)
    oci = seeds_of("oci_layout")[0]
    assert any(b"{s:" in out for out in (mutate(oci, 1 << 16, s) for s in range(10)))
