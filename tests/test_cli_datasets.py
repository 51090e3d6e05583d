"""`vmesh` login/logout/whoami and `vmesh datasets ...` as a user runs them: the real
executable in a subprocess against a real dataset_svc, checking tables, --json and exit codes
(0 ok, 1 refused, 2 usage, 3 not signed in, 4 not found, 5 unreachable)."""

from __future__ import annotations

import json
import socket
import stat
import zipfile
from pathlib import Path

import pytest

from tests._cli import Cli
from tests._dataset import DEFAULT_BACKEND, PASSWORD, dataset_server_fixture, image_bytes
from visionmesh.shapes import generate

server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture()
def cli(server, tmp_path: Path) -> Cli:  # type: ignore[no-untyped-def]
    return Cli(tmp_path, dataset_addr=server.addr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- signing in -------------------------------------------------------------------------------


def test_a_newcomer_without_login_is_told_to_sign_in(cli: Cli) -> None:
    out = cli("datasets", "list")
    assert out.code == 3, out
    assert "vmesh login" in out.stderr
    out = cli("whoami", "--json")
    assert out.code == 3
    assert "vmesh login" in out.json()["error"]["message"]


def test_login_stores_a_private_token_and_whoami_logout(server, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    username = server.user("erin").username
    bad = cli("login", username, "--password-stdin", input="wrong password\n")
    assert bad.code == 3, bad
    assert not cli.token_file.exists()

    out = cli("login", username, "--password-stdin", input=PASSWORD + "\n")
    assert out.code == 0, out
    assert f"signed in as {username}" in out.stdout
    assert stat.S_IMODE(cli.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.token_file.parent.stat().st_mode) == 0o700

    who = cli("whoami")
    assert who.code == 0 and who.stdout.startswith(username), who
    data = cli("whoami", "--json").json()
    assert data["user"]["username"] == username
    assert data["token_source"] == str(cli.token_file)

    # VISIONMESH_TOKEN wins over the stored token
    other = server.user("frank")
    env_who = cli("whoami", "--json", env={"VISIONMESH_TOKEN": other.token}).json()
    assert env_who["user"]["username"] == other.username
    assert env_who["token_source"] == "VISIONMESH_TOKEN"
    forged = cli("whoami", env={"VISIONMESH_TOKEN": other.token[:-4] + "AAAA"})
    assert forged.code == 3 and "UNAUTHENTICATED" in forged.stderr

    assert cli("logout").stdout.strip() == "signed out"
    assert not cli.token_file.exists()
    assert cli("whoami").code == 3
    assert cli("logout").stdout.strip() == "was not signed in"


def test_register_then_signed_in(cli: Cli) -> None:
    out = cli("register", "cli-newcomer", "--password-stdin", input=PASSWORD + "\n")
    assert out.code == 0, out
    assert "registered users/cli-newcomer" in out.stdout
    assert cli("whoami").stdout.startswith("cli-newcomer")
    again = cli("register", "cli-newcomer", "--password-stdin", input=PASSWORD + "\n")
    assert again.code == 1 and "ALREADY_EXISTS" in again.stderr


def test_usage_and_unreachable_exit_codes(server, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    cli.login(server, "gina")
    assert cli("datasets", "create").code == 2  # missing NAME: argparse's usage error
    assert cli("login", "--password-stdin", input="x\n").code == 2  # no user name, no tty
    down = cli("datasets", "list", "--dataset-addr", f"127.0.0.1:{_free_port()}")
    assert down.code == 5, down
    assert "unreachable" in down.stderr and "make run" in down.stderr
    assert "exit codes:" in cli("--help").stdout


# -- datasets ---------------------------------------------------------------------------------


def test_create_list_get_update_delete(server, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    me = cli.login(server, "hank")
    out = cli("datasets", "create", "birds", "--description", "garden birds")
    assert out.code == 0, out
    assert "created datasets/" in out.stdout and "private" in out.stdout
    created = cli("datasets", "create", "fish", "--public", "--json").json()
    assert created["visibility"] == "VISIBILITY_PUBLIC" and created["owner"] == f"users/{me}"

    table = cli("datasets", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "DISPLAY", "NAME"]
    assert any(" birds " in line and " private " in line for line in table[1:])
    listed = {d["display_name"] for d in cli("datasets", "list", "--json").json()["datasets"]}
    assert {"birds", "fish"} <= listed
    server.user("hank-neighbour").create_dataset("their-public", visibility=2)
    everyone = {d["display_name"] for d in cli("datasets", "list", "--json").json()["datasets"]}
    assert "their-public" in everyone
    mine = cli("datasets", "list", "--mine", "--json").json()["datasets"]
    assert {d["owner"] for d in mine} == {f"users/{me}"}

    got = cli("datasets", "get", "birds", "--json").json()
    assert got["description"] == "garden birds"
    by_id = cli("datasets", "get", got["name"].split("/")[1], "--json").json()
    assert by_id["name"] == got["name"]

    out = cli("datasets", "update", "birds", "--name", "songbirds", "--public")
    assert out.code == 0 and "display_name, visibility" in out.stdout, out
    assert cli("datasets", "get", "songbirds", "--json").json()["visibility"] == "VISIBILITY_PUBLIC"
    assert cli("datasets", "update", "songbirds").code == 2  # nothing to change

    missing = cli("datasets", "get", "no-such-birds")
    assert missing.code == 4
    assert "no dataset named 'no-such-birds'" in missing.stderr
    assert "vmesh datasets list" in missing.stderr

    assert cli("datasets", "delete", "songbirds").code == 2  # no --yes and no terminal
    out = cli("datasets", "delete", "songbirds", "--yes")
    assert out.code == 0 and "deleted" in out.stdout
    assert cli("datasets", "get", "songbirds").code == 4


def test_someone_elses_private_dataset_is_not_found_and_not_writable(server, cli: Cli) -> None:  # type: ignore[no-untyped-def]
    owner = server.user("ivy")
    private = owner.create_dataset("ivy-private")
    cli.login(server, "jack")
    out = cli("datasets", "get", private.name)
    assert out.code == 4, out
    public = owner.create_dataset("ivy-public", visibility=2)
    assert cli("datasets", "get", public.name).code == 0
    denied = cli("datasets", "update", public.name, "--name", "mine-now")
    assert denied.code == 1 and "PERMISSION_DENIED" in denied.stderr, denied


def test_upload_keeps_structure_lists_skips_and_resumes(server, cli: Cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli.login(server, "kate")
    folder = tmp_path / "photos"
    (folder / "train").mkdir(parents=True)
    (folder / "val").mkdir()
    for i in range(6):
        split = "val" if i % 3 == 2 else "train"
        (folder / split / f"img{i}.png").write_bytes(image_bytes(8 + i, 6, (i * 40, 10, 10)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "train" / "broken.jpg").write_bytes(b"this is not a jpeg")
    cli("datasets", "create", "photos")

    out = cli("datasets", "upload", "photos", str(folder))
    assert out.code == 0, out
    assert "uploaded 6 images" in out.stdout
    assert "skipped notes.txt: not an image" in out.stdout
    assert "skipped train/broken.jpg:" in out.stdout  # the server's reason
    assert "upload [" in out.stderr and "files" in out.stderr and "ETA" in out.stderr
    images = server.user("kate").all_images(
        cli("datasets", "get", "photos", "--json").json()["name"]
    )
    assert sorted(i.path for i in images) == sorted(
        f"{'val' if i % 3 == 2 else 'train'}/img{i}.png" for i in range(6)
    )
    assert {i.split for i in images} == {"train", "val"}

    # a re-run sends only what is missing or changed
    (folder / "train" / "img0.png").write_bytes(image_bytes(30, 30, (1, 2, 3)))
    (folder / "val" / "new.png").write_bytes(image_bytes(9, 9, (9, 9, 9)))
    again = cli("datasets", "upload", "photos", str(folder), "--json")
    assert again.code == 0, again
    data = again.json()
    assert data["uploaded"] == 2 and data["already_uploaded"] == 5
    assert {s["path"] for s in data["skipped"]} == {"notes.txt", "train/broken.jpg"}
    none_left = cli("datasets", "upload", "photos", str(folder), "--json").json()
    assert none_left["uploaded"] == 0 and none_left["already_uploaded"] == 7

    assert cli("datasets", "upload", "photos", str(tmp_path / "nowhere")).code == 4


@pytest.fixture()
def shapes(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    generate(folder, images=8, size=48, seed=1)
    return folder


def test_import_export_snapshot_diff_check(server, cli: Cli, shapes: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli.login(server, "liam")
    cli("datasets", "create", "geo")
    assert cli("datasets", "upload", "geo", str(shapes)).code == 0
    out = cli("datasets", "import", "geo", str(shapes / "annotations.json"))
    assert out.code == 0, out
    assert out.stdout.startswith("imported dice-standard: 8 images")

    bad = tmp_path / "bad.json"
    document = json.loads((shapes / "annotations.json").read_text())
    document["annotations"][0]["bbox"] = [0, 0, -5, 3]
    bad.write_text(json.dumps(document))
    refused = cli("datasets", "import", "geo", str(bad), "--replace")
    assert refused.code == 1, refused
    assert "INVALID_ARGUMENT" in refused.stderr and "bbox" in refused.stderr
    assert "\n  annotations[0].bbox: " in refused.stderr, refused.stderr  # the BadRequest field

    got = cli("datasets", "get", "geo")
    assert "classes: 1:circle, 2:square, 3:triangle" in got.stdout

    first = cli("datasets", "snapshot", "geo", "--version", "v1", "--json").json()
    assert first["version_name"] == "v1" and int(first["image_count"]) == 8
    # change the head: drop one annotation, then diff v1 against the head
    document = json.loads((shapes / "annotations.json").read_text())
    document["annotations"] = document["annotations"][1:]
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps(document))
    assert cli("datasets", "import", "geo", str(smaller), "--replace").code == 0
    cli("datasets", "snapshot", "geo", "--version", "v2")
    snaps = cli("datasets", "snapshots", "geo")
    assert snaps.stdout.splitlines()[0].split()[:2] == ["SNAPSHOT", "VERSION"]
    assert " v1 " in snaps.stdout and " v2 " in snaps.stdout
    diff = cli("datasets", "diff", "geo", "v1", "v2", "--json").json()
    assert diff["removed_annotation_count"] == 1
    head = cli("datasets", "diff", "geo", "v1")
    assert head.code == 0 and "(head)" in head.stdout and "annotations: +0 -1" in head.stdout
    assert cli("datasets", "diff", "geo", "v9").code == 4

    check = cli("datasets", "check", "geo", "--verify-hashes")
    assert check.code == 0 and check.stdout.startswith("ok: 8 blobs"), check

    target = tmp_path / "geo-yolo.zip"
    out = cli(
        "datasets", "export", "geo", "--format", "yolo", "--task", "detect", "-o", str(target)
    )
    assert out.code == 0, out
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
    assert any(n.endswith(".txt") for n in names) and any(n.endswith(".jpg") for n in names)
    dice = cli(
        "datasets", "export", "geo", "--snapshot", "v1", "--annotations-only", "--json",
        "-o", str(tmp_path / "v1.zip"),
    ).json()  # fmt: skip
    assert dice["written_bytes"] == int(dice["size_bytes"]) > 0
    with zipfile.ZipFile(tmp_path / "v1.zip") as archive:
        assert not any(n.endswith(".jpg") for n in archive.namelist())


def test_check_reports_a_corrupt_blob(server, cli: Cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli.login(server, "mia")
    generate(tmp_path / "own", images=3, size=40, seed=99)  # blobs no other test shares
    cli("datasets", "create", "fragile")
    cli("datasets", "upload", "fragile", str(tmp_path / "own" / "images"))
    image = server.user("mia").all_images(
        cli("datasets", "get", "fragile", "--json").json()["name"]
    )[0]
    store = server.store()
    key = f"blobs/sha256/{image.sha256[:2]}/{image.sha256}"
    store.put_bytes(key, b"corrupted bytes")
    out = cli("datasets", "check", "fragile", "--verify-hashes")
    assert out.code == 1, out
    assert "1 problems in fragile" in out.stdout and image.sha256[:12] in out.stdout
