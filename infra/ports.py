"""Loopback port probing: is a port free, who holds it, and picking free ones for test stacks."""
from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess

LOOPBACK = "127.0.0.1"

# Below Linux's default ephemeral range (32768-60999), so an outgoing client connection
# cannot grab a port between the moment we pick it and the moment a server binds it.
_PICK_RANGE = (20000, 32000)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could bind ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_holder(port: int) -> str | None:
    """Best-effort 'pid N (name)' of the process listening on ``port`` (needs ``ss``)."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    try:
        out = subprocess.run(
            [ss, "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, timeout=3
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'\("([^"]+)",pid=(\d+)', out)
    if match is not None:
        return f"pid {match.group(2)} ({match.group(1)})"
    if out.strip():
        return "an unknown process"
    try:
        lingering = subprocess.run(
            [ss, "-Htan", f"sport = :{port}"], capture_output=True, text=True, timeout=3
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if lingering.strip():
        return "connections left by a process that exited (FIN-WAIT/TIME-WAIT); retry in a minute"
    return None


def pick_free_ports(count: int, *, block: int = 1, avoid: set[int] | None = None) -> list[int]:
    """``count`` free ports; each is the first of ``block`` consecutive free ports."""
    taken = set(avoid or ())
    chosen: list[int] = []
    rng = random.Random()
    low, high = _PICK_RANGE
    for _ in range(2000):
        if len(chosen) == count:
            return chosen
        start = rng.randrange(low, high - block)
        span = set(range(start, start + block))
        if span & taken or not all(port_is_free(p) for p in span):
            continue
        taken |= span
        chosen.append(start)
    raise RuntimeError(f"could not find {count} free port block(s) of {block} on {LOOPBACK}")
