"""Every module in this package defines agents on ``streams.app.app``; ``register_all`` imports them."""


def register_all() -> None:
    from streams.plugins import import_all
    import_all("streams.agents")
