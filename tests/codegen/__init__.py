"""Tests of the generated kernels (a package, so module names never clash with other folders)."""
