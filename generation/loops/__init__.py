"""Seamless loops: cutting whole bars on the beat grid, rating the seam, and writing the loop files."""
