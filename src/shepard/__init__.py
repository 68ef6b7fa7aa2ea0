"""Shepard: turn any script or container image into a scalable, tracked batch workflow."""

__version__ = "0.1.0"
