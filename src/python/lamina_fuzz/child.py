"""One fuzz target under atheris (libFuzzer): `python -m lamina_fuzz.child TARGET [libFuzzer args] CORPUS...`.

run.py starts one of these per target. lamina (and the stdlib modules whose branches decide what
lamina sees: tarfile, gzip, json's Python part) is imported inside atheris' instrumentation, so
libFuzzer is guided by their coverage.
"""
from __future__ import annotations

import sys

import atheris

INSTRUMENTED = ["lamina", "lamina_fuzz", "tarfile", "gzip"]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m lamina_fuzz.child TARGET [libFuzzer args] CORPUS...")
    name = argv[1]
    for module in [m for m in sys.modules if m.split(".")[0] in INSTRUMENTED and m.split(".")[0] != "lamina_fuzz"]:
        del sys.modules[module]  # imported again below, instrumented
    with atheris.instrument_imports(include=INSTRUMENTED):
        from lamina_fuzz.contract import check
        from lamina_fuzz.targets import JSON_TARGETS, TARGETS
    from lamina_fuzz.mutator import custom_mutator

    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        check(target, data)

    # atheris.Mutate is looked up per call: atheris binds the real one when Fuzz() starts.
    mutator = custom_mutator(lambda data, size: atheris.Mutate(data, size)) if name in JSON_TARGETS else None
    atheris.Setup([argv[0]] + argv[2:], one_input, custom_mutator=mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
