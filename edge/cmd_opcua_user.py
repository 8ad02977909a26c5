"""``flowedge opcua-user FILE NAME``: add or replace a user of the station's OPC UA server.

The password is read from the terminal (twice), from standard input with
``--password-stdin`` (one line: for provisioning scripts), never from the command line,
where other users could see it. Only its scrypt hash is stored; the file is written 0600.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowedge.core.errors import EXIT_OK
from flowedge.edge.passwords import read_password
from flowedge.edge.sinks.opcua_users import ROLES, save_user


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="the sink's users_file")
    parser.add_argument("name", metavar="NAME", help="the user name the client logs in with")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="read",
        help="read: browse, read, subscribe; write: also the PLC handshake nodes",
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )


def run(args: argparse.Namespace) -> int:
    save_user(args.file, args.name, args.role, read_password(args.password_stdin))
    print(f"{args.name} ({args.role}) written to {args.file} (mode 0600)")
    return EXIT_OK
