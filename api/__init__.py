"""The read API: clients read the materialized views (Redis only) over HTTP JSON."""
