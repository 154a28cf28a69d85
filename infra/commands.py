"""The ``vitrina`` command registry: a subcommand per job, registered where the job lives.

Commands of ``streams.cli.*`` register on import; a package above the stream layers (the read API)
contributes its commands through the ``vitrina.commands`` entry point group (pyproject.toml), so the
CLI never imports it by name.
"""
from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Callable

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}
ENTRY_POINT_GROUP = "vitrina.commands"


def command(name: str, help_text: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable]:
    """Register ``run_<name>`` with the argument builder it decorates."""
    def register(add_args: Callable[[argparse.ArgumentParser], None]) -> Callable:
        def bind(run: Command) -> Command:
            COMMANDS[name] = (run, add_args, help_text)
            return run
        return bind
    return register


def load_entry_points() -> None:
    """Import the modules other packages declare in the ``vitrina.commands`` group (they register)."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        point.load()
