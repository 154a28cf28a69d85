"""``vitrina api``: serve the read API; ``vitrina token``: mint a bearer token for it (dev and demo)."""
from __future__ import annotations

import argparse
import sys

from infra.commands import command


@command("api", "serve the read API (HTTP JSON over the Redis views) on VITRINA_API_HOST:VITRINA_API_PORT")(lambda p: None)
def run_api(args: argparse.Namespace) -> int:
    from api.app import serve
    from api.hardening import InsecureSettingsError

    try:
        serve()
    except InsecureSettingsError as exc:
        print(f"vitrina api: {exc}", file=sys.stderr)
        return 2
    return 0


def _token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id", nargs="?", help="the token's subject (omit with --ops for an ops-only token)")
    p.add_argument("--ops", action="store_true", help="add the ops role (ops routes, any user's views)")
    p.add_argument("--ttl-s", type=int, default=3600, help="lifetime in seconds (default 3600, at most 30 days)")
    p.add_argument("--private-key", help="PEM text or @path of the private key, for RS*/ES* algorithms; HS* tokens "
                                         "use VITRINA_JWT_KEY or the dev secret of the data dir")
    p.add_argument("--ops-key", action="store_true", help="print the ops key (X-Ops-Key) instead of a token")


@command("token", "mint a bearer token for the read API (the dev stack's secret, or --private-key)")(_token_args)
def run_token(args: argparse.Namespace) -> int:
    from api.auth import TokenConfig, valid_user_id
    from infra.settings import load

    config = TokenConfig.from_settings(load(), private_key=args.private_key)
    if args.ops_key:
        print(config.ops_key)
        return 0
    if args.user_id is None and not args.ops:
        print("vitrina token: give a user id, or --ops", file=sys.stderr)
        return 2
    if args.user_id is not None and not valid_user_id(args.user_id):
        print("vitrina token: a user id is 1-128 printable characters without spaces", file=sys.stderr)
        return 2
    if not 0 < args.ttl_s <= 30 * 24 * 3600:
        print("vitrina token: --ttl-s must be 1..2592000", file=sys.stderr)
        return 2
    print(config.mint(args.user_id, ["ops"] if args.ops else [], ttl_s=args.ttl_s))
    return 0
