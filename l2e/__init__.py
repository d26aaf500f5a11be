"""l2e: turn decoder-only LLMs into text-embedding models, one JSON config at a time."""

__version__ = "0.1.0"
