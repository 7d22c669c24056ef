"""Committed seeded evaluation subsets (xz JSON Lines); a package so setuptools ships the files."""
