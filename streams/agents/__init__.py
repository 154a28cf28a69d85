"""Importing this package registers every agent on ``streams.app.app``."""
from streams.agents import plays  # noqa: F401
