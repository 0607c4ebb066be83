"""The primitive registry (filled by the op-family modules of this package)."""
