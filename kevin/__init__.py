"""Kevin: a post-trade confirmation matcher on an append-only PostgreSQL store."""

__version__ = "0.1.0"
