"""Coverage-guided fuzzing of every lamina reader of untrusted bytes (see README.md)."""
