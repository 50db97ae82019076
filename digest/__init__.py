"""digest: a daily email of the new arXiv papers matching each subscriber's keywords."""

__version__ = "0.1.0"
