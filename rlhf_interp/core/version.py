"""The library version, where every module can read it without importing the package facade."""

__version__ = "0.1.0"
