"""Ops: replay and rebuild, the worker supervisor, consumer lag, dead-letter re-drive, group offsets."""
