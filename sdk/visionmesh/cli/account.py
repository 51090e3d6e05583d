"""vmesh register / login / logout / whoami."""

from __future__ import annotations

import argparse
import getpass
import sys

from visionmesh.cli._common import (
    COMMON,
    NOT_SIGNED_IN,
    USAGE,
    CliError,
    open_mesh,
    print_json,
    to_dict,
    wants_json,
)
from visionmesh.client import StoredToken, clear_token, load_token, save_token, token_path
from visionmesh.v1 import auth_pb2


def register(sub: argparse._SubParsersAction) -> None:
    for name, helptext in (
        ("login", "sign in and store the token (mode 0600 under your config folder)"),
        ("register", "create a user on dataset_svc, then sign in as it"),
    ):
        p = sub.add_parser(name, parents=[COMMON], help=helptext, description=helptext)
        p.add_argument("username", nargs="?", help="user name (asked for when left out)")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from stdin's first line instead of prompting",
        )
        p.set_defaults(func=cmd_login if name == "login" else cmd_register)
    p = sub.add_parser("logout", parents=[COMMON], help="forget the stored token")
    p.set_defaults(func=cmd_logout)
    p = sub.add_parser("whoami", parents=[COMMON], help="who the stored token signs in as")
    p.set_defaults(func=cmd_whoami)


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    username = args.username
    if not username:
        if not sys.stdin.isatty():
            raise CliError("give the user name: vmesh login USERNAME --password-stdin", USAGE)
        username = input("username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {username}: ")
    else:
        raise CliError("no terminal to ask for the password: pipe it with --password-stdin", USAGE)
    if not username or not password:
        raise CliError("a user name and a password are needed", USAGE)
    return username, password


def _sign_in(args: argparse.Namespace, username: str, password: str) -> int:
    mesh = open_mesh(args, signed_in=False)
    reply = mesh.login(username, password)
    expire = reply.expire_time.ToDatetime().isoformat() + "Z" if reply.expire_time.seconds else ""
    path = save_token(StoredToken(reply.access_token, username, mesh.dataset_addr, expire))
    if wants_json(args):
        print_json({"username": username, "token_file": str(path), "expire_time": expire})
    else:
        print(f"signed in as {username} at {mesh.dataset_addr} (token in {path}, until {expire})")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    username, password = _credentials(args)
    return _sign_in(args, username, password)


def cmd_register(args: argparse.Namespace) -> int:
    username, password = _credentials(args)
    mesh = open_mesh(args, signed_in=False)
    user = mesh.auth.Register(
        auth_pb2.RegisterRequest(username=username, password=password), timeout=mesh.timeout
    ).user
    if not wants_json(args):
        print(f"registered {user.name}")
    return _sign_in(args, username, password)


def cmd_logout(args: argparse.Namespace) -> int:
    removed = clear_token()
    if wants_json(args):
        print_json({"signed_out": removed, "token_file": str(token_path())})
    else:
        print("signed out" if removed else "was not signed in")
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    stored = load_token()
    if stored is None:
        raise CliError("not signed in: run `vmesh login`", NOT_SIGNED_IN)
    mesh = open_mesh(args)
    user = mesh.auth.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=mesh.timeout).user
    source = "VISIONMESH_TOKEN" if stored.source == "env" else str(token_path())
    if wants_json(args):
        print_json(
            {
                "user": to_dict(user),
                "token_source": source,
                "expire_time": stored.expire_time,
                "dataset_addr": mesh.dataset_addr,
            }
        )
    else:
        until = f", until {stored.expire_time}" if stored.expire_time else ""
        print(f"{user.username} at {mesh.dataset_addr} (token from {source}{until})")
    return 0
