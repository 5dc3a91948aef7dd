"""Owns lamina's test helpers: services (Docker engine, registries) and images built for tests."""
