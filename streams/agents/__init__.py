"""Every module in this package defines agents on ``streams.runtime.app.app``; ``register_all`` imports them.

``Settings.agents`` (``VITRINA_AGENTS``: comma-separated module names, e.g. ``uploads``) limits a worker to
some modules: a dedicated transcoding worker, or a replay under a new consumer group that must not
re-run the other capabilities' agents.
"""
import importlib

from infra.settings import Settings


def register_all(settings: Settings) -> None:
    from streams.runtime.plugins import import_all
    only = [name.strip() for name in settings.agents.split(",") if name.strip()]
    if not only:
        import_all("streams.agents")
        return
    for name in only:
        importlib.import_module(f"streams.agents.{name}")
