"""`shepard secretify`: the flock's secrets (stored encrypted, given to every job)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shepard.cli.common import FlockOption, JsonOption, console, open_flock, print_json
from shepard.config import AwsConfig
from shepard.keys import ENV_VAR, AwsSecret, SecretKey, load_key
from shepard.secrets import SecretError, SecretStore, read_folder
from shepard.storage import ObjectStore


def secretify(
    folder: Annotated[
        Path | None,
        typer.Argument(
            metavar="FOLDER", help="Folder whose files (not sub-folders) become the secrets."
        ),
    ] = None,
    flock: FlockOption = Path("."),
    add: Annotated[
        bool, typer.Option("--add", help="Add FOLDER's files to the stored secrets instead.")
    ] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="Show the stored secrets' names and sizes.")
    ] = False,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", metavar="NAME", help="Delete the secret NAME (repeatable)."),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help=f"Re-encrypt every secret with the first key of {ENV_VAR} (or of the key "
            "file), so the older keys can be dropped.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Store the files directly in FOLDER, encrypted, as the flock's secrets: every job finds
    them in $ROOT_INPUT_NAME/secrets/. Replaces the whole stored set unless --add is given."""
    actions = [folder is not None, list_, bool(remove), rotate]
    if sum(actions) != 1:
        raise SecretError("give exactly one of FOLDER, --list, --remove NAME or --rotate")
    if add and folder is None:
        raise SecretError("--add needs a FOLDER of secrets to add")
    if as_json and not list_:
        raise SecretError("--json goes with --list")
    f = open_flock(flock)
    secret = _aws_secret(f.config.aws)
    store = SecretStore(f.store("secrets"), load_key(secret=secret) if secret and rotate else None)
    try:
        if list_:
            _list(store, f.config.name, as_json)
        elif remove:
            store.remove(remove)
            console.print(f"removed {_names(remove)} from flock {escape(f.config.name)}")
        elif rotate:
            count = store.rotate()
            key = store.key
            console.print(
                f"re-encrypted {count} secret(s) with key {key.fingerprint} from "
                f"{escape(key.source)}; keys after the first one are no longer needed"
            )
        elif folder is not None:
            _store(store.store, folder, f.config.name, add, secret)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise SecretError(f"cannot complete secretify:{where}: {exc.strerror or exc}") from exc


def _aws_secret(cfg: AwsConfig) -> AwsSecret | None:
    """A serverless flock's key is in its Secrets Manager secret (`aws deploy` made it)."""
    return AwsSecret(f"{cfg.stack}/secrets", cfg.region) if cfg.stack else None


def _store(
    secrets: ObjectStore, folder: Path, flock_name: str, add: bool, secret: AwsSecret | None
) -> None:
    scan = read_folder(folder)
    # A new key is only made when no stored secret could need another one.
    key = load_key(create=not add or not SecretStore(secrets).names(), secret=secret)
    store = SecretStore(secrets, key)
    if key.created and secret is None:
        _announce_key(key)
    if add:
        store.add(scan.secrets)
        gone: list[str] = []
    else:
        gone = store.put_all(scan.secrets)
    verb = "added" if add else "stored"
    console.print(
        f"{verb} {len(scan.secrets)} secret(s) in flock {escape(flock_name)}: "
        f"{_names(scan.secrets)} (encrypted with key {key.fingerprint} from {escape(key.source)})"
    )
    if gone:
        console.print(f"removed {len(gone)} secret(s) not in {escape(str(folder))}: {_names(gone)}")
    for name, why in scan.skipped:
        console.print(f"skipped {escape(name)}: {escape(why)}")


def _announce_key(key: SecretKey) -> None:
    path = escape(key.source)
    console.print(
        f"created a new secret key in {path} (mode 0600). Keep a copy somewhere safe: "
        "without it the stored secrets cannot be decrypted."
    )
    console.print(
        f"Workers on other machines need the same key: set {ENV_VAR} there, "
        f'e.g. export {ENV_VAR}="$(cat {path})"'
    )


def _list(store: SecretStore, flock_name: str, as_json: bool) -> None:
    infos = store.list()
    if as_json:
        print_json([{"name": i.name, "size": i.size} for i in infos])
        return
    if not infos:
        console.print(f"no secrets in flock {flock_name}", markup=False)
        return
    table = Table(title=f"Secrets of flock {escape(flock_name)}")
    table.add_column("name")
    table.add_column("bytes", justify="right")
    for info in infos:
        table.add_row(escape(info.name), str(info.size))
    console.print(table)


def _names(names: Iterable[str]) -> str:
    return ", ".join(escape(n) for n in names)
