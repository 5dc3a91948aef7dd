"""lamina's test helpers, shipped apart from the core's runtime package: synthetic images, ELF files, hostile sources."""
