"""A small Hugging Face Hub look-alike served on 127.0.0.1, for offline work and for tests of real Hub code paths."""

from .server import LocalHub

__all__ = ["LocalHub"]
