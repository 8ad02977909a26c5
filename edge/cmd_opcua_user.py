"""``flowedge opcua-user FILE NAME``: add or replace a user of the station's OPC UA server.

The password is read from the terminal (twice), from standard input with
``--password-stdin`` (one line: for provisioning scripts), never from the command line,
where other users could see it. Only its scrypt hash is stored; the file is written 0600.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from flowedge.core.errors import EXIT_OK, ConfigError
from flowedge.edge.sinks.opcua_users import ROLES, save_user

MIN_PASSWORD = 8


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


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ; nothing written")
    return first


def run(args: argparse.Namespace) -> int:
    password = _password(args.password_stdin)
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password needs at least {MIN_PASSWORD} characters")
    save_user(args.file, args.name, args.role, password)
    print(f"{args.name} ({args.role}) written to {args.file} (mode 0600)")
    return EXIT_OK
