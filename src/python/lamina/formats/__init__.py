"""Image formats on disk: OCI layouts and `docker save` archives, read and written, and where blobs live."""
