"""The package version (also read by setup.py)."""

__version__ = "0.2.0"
