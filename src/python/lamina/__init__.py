"""lamina: compose container images from layers of existing images, keeping every layer's bytes and digest."""
