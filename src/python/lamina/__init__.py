"""lamina: compose container images from layers of existing images, keeping every layer's bytes and digest."""

# The one place lamina's version is set: both distributions (`lamina` from src/python:dist and
# `lamina-pants` from pants-plugins:dist) get it (pants-plugins/lamina_release), and the installed
# plugin builds its core's PEX from `lamina==__version__`.
__version__ = "0.1.0"
