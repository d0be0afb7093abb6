"""starchat: a terminal coding assistant for the StarChat family of code models."""

__version__ = "0.1.0"
