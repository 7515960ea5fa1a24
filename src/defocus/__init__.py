"""defocus: metric depth and all-in-focus images from focal stacks (see README.md)."""

__version__ = "0.1.0"
