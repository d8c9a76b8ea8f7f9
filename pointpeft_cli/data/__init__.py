"""Datasets, transforms and the procedural shapes task."""
