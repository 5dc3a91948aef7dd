"""Composition analysis: per-layer indexes, the final filesystem, and the checks run on a stack of layers."""
