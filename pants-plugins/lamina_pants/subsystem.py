"""The `[lamina]` options."""
from __future__ import annotations

from pants.option.option_types import StrListOption
from pants.option.subsystem import Subsystem
from pants.util.strutil import softwrap


class LaminaSubsystem(Subsystem):
    options_scope = "lamina"
    help = "Options for lamina, which composes container images from layers of existing images."

    interpreter_constraints = StrListOption(
        default=["CPython>=3.9,<3.14"],
        help=softwrap(
            """
            Python interpreters that may run the lamina core (layer extraction and composition
            run as sandboxed processes of this interpreter).
            """
        ),
        advanced=True,
    )
    requirements = StrListOption(
        default=["zstandard==0.23.0", "urllib3==2.6.3", "docker==7.1.0"],
        help="Requirements of the lamina core, resolved from PyPI into its PEX.",
        advanced=True,
    )
