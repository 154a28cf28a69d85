"""Kafka plumbing: codec and schema registry, producer, tail, topic registry and admin, offsets, dead-letter envelopes, validation, broker capabilities (and the Tansu workarounds)."""
