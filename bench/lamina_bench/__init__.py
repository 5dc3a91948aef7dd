"""lamina's benchmark (see bench/run.py)."""
import os
import sys

# The bench reuses the end-to-end tests' support code (busybox base image, docker CLI wrapper,
# SampleRepo and its log parsing) from tests/python/lamina_tests/support.
_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "python")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
