"""Backbones, point ops and the model registry."""
