"""The showcase builder."""
