"""``flowedge web-user``: add a user of the station's web page, or change one's role or
password. The users file is written 0600 (and refused when others may read it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flowedge.edge.passwords import read_password
from flowedge.edge.web.users import ROLES, save_user


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the user name to log in with")
    parser.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    parser.add_argument(
        "--users",
        type=Path,
        default=Path("web-users.json"),
        help="the users file, the web sink's 'users' (default: web-users.json)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (scripts); else it is asked twice",
    )


def run(args: argparse.Namespace) -> int:
    new = save_user(args.users, args.name, args.role, read_password(args.password_stdin))
    print(f"{'added' if new else 'changed'} {args.name} ({args.role}) in {args.users}")
    return 0
