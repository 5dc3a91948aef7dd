"""Test helpers that ship with lamina: synthetic images in every format the readers accept."""
