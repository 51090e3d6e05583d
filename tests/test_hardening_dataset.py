"""dataset_svc under hostile and careless input (issue #13), over the real gRPC server.

Each test is one line of the issue: bad input answers INVALID_ARGUMENT naming the field
(never INTERNAL/UNKNOWN), nothing refused writes to the store, imports never replace
annotations by accident, concurrent snapshots of one version name, names free of control
characters, models checked against the trainers, usernames normalized, password policy
and sign-in throttling.
"""

from __future__ import annotations

import base64
import io
import json
import random
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests._dataset import (
    DEFAULT_BACKEND,
    PASSWORD,
    PG_URL,
    dataset_server_fixture,
    image_bytes,
    shared_moto,
    start_dataset_server,
)
from visionmesh.errors import bad_request_fields
from visionmesh.store import BLOB_PREFIX
from visionmesh.uploads import upload_requests
from visionmesh.v1 import auth_pb2, common_pb2, compatibility_pb2, dataset_pb2

D = dataset_pb2
C = common_pb2
OnConflict = D.UploadImagesHeader.OnConflict

server = dataset_server_fixture([DEFAULT_BACKEND])


def refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def field_of(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> dict[str, str]:
    return bad_request_fields(refused(call, code))


def noisy_jpeg(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def blobs(store) -> set[str]:
    return set(store.list(BLOB_PREFIX))


def coco(categories, files, boxes=True) -> bytes:
    images = [
        {"id": i, "file_name": f, "width": 8, "height": 8} for i, f in enumerate(files, start=1)
    ]
    anns = [
        {"id": i, "image_id": i, "category_id": categories[0]["id"], "bbox": [1, 1, 4, 4]}
        for i in range(1, len(files) + 1)
        if boxes
    ]
    return json.dumps({"categories": categories, "images": images, "annotations": anns}).encode()


def import_request(parent, content, **kw) -> D.ImportAnnotationsRequest:
    return D.ImportAnnotationsRequest(
        parent=parent, files=[D.AnnotationFile(path="annotations.json", content=content)], **kw
    )


# -- bad input -------------------------------------------------------------------------------


def test_forged_page_tokens_are_invalid_arguments(server):
    alice = server.user("alice")
    for i in range(3):
        alice.create_dataset(f"page-{i}")
    first = alice.datasets.ListDatasets(D.ListDatasetsRequest(page_size=1))
    assert first.next_page_token
    padded = first.next_page_token + "=" * (-len(first.next_page_token) % 4)
    token = json.loads(base64.urlsafe_b64decode(padded))

    def forged(offset) -> str:
        raw = json.dumps({**token, "o": offset}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    # Same query fingerprint, so only the offset is wrong.
    assert alice.datasets.ListDatasets(D.ListDatasetsRequest(page_size=1, page_token=forged(2)))
    for offset in (10**30, 2**63, -5, "1", 1.5):
        fields = field_of(
            lambda o=offset: alice.datasets.ListDatasets(
                D.ListDatasetsRequest(page_size=1, page_token=forged(o))
            )
        )
        assert "page_token" in fields, offset
    ds = alice.create_dataset("snapshots-page")
    fields = field_of(
        lambda: alice.datasets.ListSnapshots(
            D.ListSnapshotsRequest(parent=ds.name, page_token=forged(10**30))
        )
    )
    assert "page_token" in fields
    assert "page_token" in field_of(
        lambda: alice.datasets.ListImages(
            D.ListImagesRequest(parent=ds.name, page_token="x" * 5000)
        )
    )


def test_huge_filters_are_refused_up_front(server):
    alice = server.user("alice")
    ds = alice.create_dataset("filters")
    huge = 'display_name:"' + "a" * 100_000 + '"'
    many = " AND ".join(['display_name:"a"'] * 2000)
    few_but_too_many = " AND ".join(["labeled=true"] * 17)
    for text in (huge, many, few_but_too_many):
        fields = field_of(
            lambda t=text: alice.datasets.ListDatasets(D.ListDatasetsRequest(filter=t))
        )
        assert "filter" in fields
        fields = field_of(
            lambda t=text: alice.datasets.ListImages(D.ListImagesRequest(parent=ds.name, filter=t))
        )
        assert "filter" in fields
    fields = field_of(
        lambda: alice.datasets.ListDatasets(D.ListDatasetsRequest(filter=few_but_too_many))
    )
    assert "more than 16 terms" in fields["filter"]
    # A sane conjunction still works.
    ok = alice.datasets.ListDatasets(
        D.ListDatasetsRequest(filter='display_name:"filt" labeled=false')
    )
    assert [d.name for d in ok.datasets] == [ds.name]


def test_out_of_range_numbers_and_long_orderings_are_invalid_arguments(server):
    alice = server.user("alice")
    ds = alice.create_dataset("ranges")
    alice.upload(ds.name, {"a.png": image_bytes(8, 8)})
    huge_id = f"{ds.name}/images/{2**64 - 1}"
    assert "name" in field_of(
        lambda: alice.datasets.GetImageUrl(D.GetImageUrlRequest(name=huge_id))
    )
    assert "images[0]" in field_of(
        lambda: alice.datasets.DeleteImages(D.DeleteImagesRequest(parent=ds.name, images=[huge_id]))
    )
    for order_by in (",".join(["display_name"] * 5000), "display_name, display_name desc"):
        assert "order_by" in field_of(
            lambda o=order_by: alice.datasets.ListDatasets(D.ListDatasetsRequest(order_by=o))
        )
    for category_id in (2**63, 10**30):
        doc = (
            coco([{"id": 1, "name": "a"}], ["a.png"])
            .replace(b'"id": 1, "name"', b'"id": %d, "name"' % category_id)
            .replace(b'"category_id": 1', b'"category_id": %d' % category_id)
        )
        err = refused(lambda d=doc: alice.datasets.ImportAnnotations(import_request(ds.name, d)))
        assert bad_request_fields(err), err.details()


def test_deeply_nested_json_import_is_an_invalid_argument(server):
    alice = server.user("alice")
    ds = alice.create_dataset("deep")
    alice.upload(ds.name, {"a.png": image_bytes(8, 8)})
    for depth in (2_000, 100_000):
        deep = ("[" * depth + "]" * depth).encode()
        nested = ('{"categories": ' + '{"a":' * depth + "1" + "}" * depth + "}").encode()
        for content in (deep, nested):
            err = refused(
                lambda c=content: alice.datasets.ImportAnnotations(import_request(ds.name, c))
            )
            assert bad_request_fields(err), err.details()
    # Shallow enough for the reader, too deep to store: a category's extra field.
    for depth in (100, 1000):
        template = coco([{"id": 1, "name": "a", "x": "X"}], ["a.png"])
        doc = template.replace(b'"X"', b"[" * depth + b"]" * depth)
        fields = field_of(
            lambda d=doc: alice.datasets.ImportAnnotations(import_request(ds.name, d))
        )
        assert "categories[0].x" in fields, fields
    assert (
        alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset.annotation_count == 0
    )


def test_enum_values_outside_the_enum_are_invalid_arguments(server):
    alice = server.user("alice")
    ds = alice.create_dataset("enums")
    alice.upload(ds.name, {"a.png": image_bytes(8, 8)})
    cases = {
        "task_type": lambda: alice.compat.CheckCompatibility(
            compatibility_pb2.CheckCompatibilityRequest(dataset=ds.name, task_type=99)
        ),
        "format": lambda: alice.datasets.ExportDataset(
            D.ExportDatasetRequest(name=ds.name, format=77)
        ),
        "dataset.visibility": lambda: alice.datasets.CreateDataset(
            D.CreateDatasetRequest(dataset=D.Dataset(display_name="v", visibility=5))
        ),
    }
    for field, call in cases.items():
        assert field in field_of(call), field
    export_task = field_of(
        lambda: alice.datasets.ExportDataset(
            D.ExportDatasetRequest(name=ds.name, format=C.ANNOTATION_FORMAT_YOLO, task_type=-3)
        )
    )
    assert "task_type" in export_task
    assert "format" in field_of(
        lambda: alice.datasets.ImportAnnotations(
            import_request(ds.name, coco([{"id": 1, "name": "a"}], ["a.png"]), format=42)
        )
    )
    header = D.UploadImagesHeader(parent=ds.name, on_conflict=9)
    stream = iter(
        [D.UploadImagesRequest(header=header), D.UploadImagesRequest(end=D.UploadImagesEnd())]
    )
    assert "header.on_conflict" in field_of(lambda: alice.datasets.UploadImages(stream))


# -- data kept or changed against the API's word -----------------------------------------------


def test_truncated_jpeg_is_not_stored(server):
    alice = server.user("alice")
    ds = alice.create_dataset("cut")
    whole = noisy_jpeg(seed=1)
    store = server.store()
    before = blobs(store)
    reply = alice.upload(
        ds.name, {"train/cut.jpg": whole[: int(len(whole) * 0.4)], "train/whole.jpg": whole}
    )
    assert [i.path for i in reply.images] == ["train/whole.jpg"]
    assert [s.path for s in reply.skipped] == ["train/cut.jpg"]
    assert "truncated" in reply.skipped[0].reason
    assert len(blobs(store) - before) == 1  # the whole one only


@pytest.fixture(scope="module")
def s3server(tmp_path_factory):
    srv, cleanup = start_dataset_server(
        "sqlite+s3", tmp_path_factory.mktemp("home-s3"), moto=shared_moto
    )
    try:
        yield srv
    finally:
        cleanup()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_refused_and_skipped_uploads_write_nothing_to_the_store(server, s3server, backend):
    srv = server if backend == "local" else s3server
    alice = srv.user("alice")
    ds = alice.create_dataset("conflicts")
    alice.upload(ds.name, {"b/taken.png": image_bytes(8, 8, (1, 2, 3))})
    store = srv.store()
    before = blobs(store)
    # FAIL: new files first (on S3 their blobs are written as they arrive), then a taken path.
    files = [
        ("a/new1.png", image_bytes(8, 8, (10, 20, 30))),
        ("a/new2.png", image_bytes(8, 8, (11, 20, 30))),
        ("b/taken.png", image_bytes(8, 8, (12, 20, 30))),
        ("c/new3.png", image_bytes(8, 8, (13, 20, 30))),
    ]
    err = refused(
        lambda: alice.upload(ds.name, files, on_conflict=OnConflict.ON_CONFLICT_FAIL),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "nothing was committed" in err.details()
    assert blobs(store) == before
    assert [i.path for i in alice.all_images(ds.name)] == ["b/taken.png"]
    # SKIP: the taken path is kept and its new bytes are not stored; the rest is.
    reply = alice.upload(ds.name, files[2:], on_conflict=OnConflict.ON_CONFLICT_SKIP)
    assert [s.path for s in reply.skipped] == ["b/taken.png"]
    assert [i.path for i in reply.images] == ["c/new3.png"]
    assert blobs(store) - before == {
        f"{BLOB_PREFIX}{reply.images[0].sha256[:2]}/{reply.images[0].sha256}"
    }
    # A stream without its end message stores nothing either.
    requests = list(upload_requests(ds.name, [("d/x.png", image_bytes(9, 9, (99, 1, 1)))]))
    refused(lambda: alice.datasets.UploadImages(iter(requests[:-1])))
    assert len(blobs(store) - before) == 1


def test_import_needs_a_document_and_replace_existing(server):
    alice = server.user("alice")
    ds = alice.create_dataset("replace")
    alice.upload(
        ds.name, {"cat/a.png": image_bytes(8, 8), "dog/b.png": image_bytes(8, 8, (1, 1, 1))}
    )
    doc = coco([{"id": 4, "name": "box"}], ["cat/a.png", "dog/b.png"])
    assert alice.datasets.ImportAnnotations(import_request(ds.name, doc)).annotation_count == 2
    # No files and no format: refused, the boxes stay.
    fields = field_of(
        lambda: alice.datasets.ImportAnnotations(D.ImportAnnotationsRequest(parent=ds.name))
    )
    assert "files" in fields
    # ImageFolder asked for by name, on a labeled dataset, without replace_existing.
    folder = D.ImportAnnotationsRequest(parent=ds.name, format=C.ANNOTATION_FORMAT_IMAGEFOLDER)
    err = refused(
        lambda: alice.datasets.ImportAnnotations(folder), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "replace_existing" in err.details()
    refused(
        lambda: alice.datasets.ImportAnnotations(import_request(ds.name, doc)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    head = json.loads(
        alice.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=ds.name)).document
    )
    assert [c["name"] for c in head["categories"]] == ["box"] and len(head["annotations"]) == 2
    assert all(a.get("bbox") for a in head["annotations"])
    # Asked for explicitly: replaced.
    folder.replace_existing = True
    reply = alice.datasets.ImportAnnotations(folder)
    assert reply.category_count == 2
    head = json.loads(
        alice.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=ds.name)).document
    )
    assert sorted(c["name"] for c in head["categories"]) == ["cat", "dog"]


def concurrent_snapshots(srv, n: int = 6) -> None:
    alice = srv.user("alice")
    ds = alice.create_dataset("race")
    alice.upload(ds.name, {"a.png": image_bytes(8, 8)})
    store = srv.store()
    barrier = threading.Barrier(n)
    outcomes: list[object] = []

    def take() -> None:
        barrier.wait()
        try:
            alice.datasets.CreateSnapshot(
                D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v1")),
                timeout=60,
            )
            outcomes.append("OK")
        except grpc.RpcError as err:
            outcomes.append(err.code())

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes)) == sorted(
        ["OK"] + [str(grpc.StatusCode.ALREADY_EXISTS)] * (n - 1)
    ), outcomes
    listed = alice.datasets.ListSnapshots(D.ListSnapshotsRequest(parent=ds.name)).snapshots
    assert len(listed) == 1
    dataset_id = ds.name.split("/")[1]
    manifests = list(store.list(f"datasets/{dataset_id}/snapshots/"))
    assert manifests == [f"{listed[0].name}/manifest.json"]


def test_concurrent_snapshots_of_one_version_name(server):
    concurrent_snapshots(server)


@pytest.mark.skipif(not PG_URL, reason="VISIONMESH_TEST_DATABASE_URL is not set")
def test_concurrent_snapshots_of_one_version_name_postgres(tmp_path):
    srv, cleanup = start_dataset_server("postgres+local", tmp_path / "home")
    try:
        concurrent_snapshots(srv)
    finally:
        cleanup()


def test_names_are_bounded_and_free_of_control_characters(server):
    alice = server.user("alice")
    create = alice.datasets.CreateDataset
    for bad in ("a\x00b", "line\nbreak", "tab\there", "x" * 201, "bell\x07", "c1\x85x"):
        assert "dataset.display_name" in field_of(
            lambda b=bad: create(D.CreateDatasetRequest(dataset=D.Dataset(display_name=b)))
        )
    assert "dataset.description" in field_of(
        lambda: create(
            D.CreateDatasetRequest(dataset=D.Dataset(display_name="d", description="x\x00"))
        )
    )
    ds = alice.create_dataset("  ok name  ", description="two\nlines\tand a tab")
    assert ds.display_name == "ok name" and ds.description == "two\nlines\tand a tab"
    update = D.UpdateDatasetRequest(dataset=D.Dataset(name=ds.name, display_name="n\x00"))
    update.update_mask.paths.append("display_name")
    assert "dataset.display_name" in field_of(lambda: alice.datasets.UpdateDataset(update))
    snap = D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(description="s\x00"))
    assert "snapshot.description" in field_of(lambda: alice.datasets.CreateSnapshot(snap))
    # Category names of an import.
    alice.upload(ds.name, {"a.png": image_bytes(8, 8)})
    for name, why in (("ca\x00t", "control"), ("c" * 300, "at most")):
        fields = field_of(
            lambda n=name: alice.datasets.ImportAnnotations(
                import_request(ds.name, coco([{"id": 1, "name": n}], ["a.png"]))
            )
        )
        assert any(why in d for f, d in fields.items() if f.startswith("categories[0]")), fields
    assert "class_names[1]" in field_of(
        lambda: alice.datasets.ImportAnnotations(
            D.ImportAnnotationsRequest(
                parent=ds.name,
                files=[D.AnnotationFile(path="labels/a.txt", content=b"0 0.5 0.5 0.2 0.2\n")],
                class_names=["cat", "d\x00g"],
                format=C.ANNOTATION_FORMAT_YOLO,
            )
        )
    )


def test_check_compatibility_refuses_models_of_another_task(server):
    alice = server.user("alice")
    ds = alice.create_dataset("models")
    alice.upload(ds.name, {"a.png": image_bytes(8, 8), "b.png": image_bytes(8, 8, (1, 1, 1))})
    alice.datasets.ImportAnnotations(
        import_request(ds.name, coco([{"id": 1, "name": "a"}], ["a.png", "b.png"]))
    )

    def check(task, model):
        return alice.compat.CheckCompatibility(
            compatibility_pb2.CheckCompatibilityRequest(
                dataset=ds.name, task_type=task, model=model
            )
        )

    for task, model in [
        (C.TASK_TYPE_OBJECT_DETECTION, "yolo11n-cls"),
        (C.TASK_TYPE_OBJECT_DETECTION, "yolo11n-seg"),
        (C.TASK_TYPE_IMAGE_CLASSIFICATION, "yolo26s-pose"),
        (C.TASK_TYPE_OBJECT_DETECTION, " yolo11n"),
        (C.TASK_TYPE_OBJECT_DETECTION, "m" * 200),
    ]:
        assert "model" in field_of(lambda t=task, m=model: check(t, m)), model
    # No trainer is reachable here: a model no one can vouch for is a warning, not an error.
    report = check(C.TASK_TYPE_OBJECT_DETECTION, "nosuchmodel").report
    assert report.compatible and any("nosuchmodel" in w for w in report.warnings)


def test_check_compatibility_asks_the_trainers_which_models_exist(tmp_path):
    from tests._trainers import start_trainer

    srv, cleanup = start_dataset_server(DEFAULT_BACKEND, tmp_path / "home")
    trainer = None
    try:
        trainer = start_trainer("timm", srv, guard_dir=tmp_path / "guard")
        srv.env["VISIONMESH_TRAINERS"] = f"timm={trainer.addr}"
        srv.restart()
        alice = srv.user("alice")
        ds = alice.create_dataset("models")
        alice.upload(
            ds.name,
            {
                f"{c}/{i}.png": image_bytes(8, 8, (i, j, 0))
                for j, c in enumerate(("cat", "dog"))
                for i in (1, 2)
            },
        )
        alice.datasets.ImportAnnotations(
            D.ImportAnnotationsRequest(parent=ds.name, format=C.ANNOTATION_FORMAT_IMAGEFOLDER)
        )

        def check(task, model):
            return alice.compat.CheckCompatibility(
                compatibility_pb2.CheckCompatibilityRequest(
                    dataset=ds.name, task_type=task, model=model
                )
            )

        assert check(C.TASK_TYPE_IMAGE_CLASSIFICATION, "resnet18").report.compatible
        err = refused(lambda: check(C.TASK_TYPE_IMAGE_CLASSIFICATION, "no-such-net"))
        assert "model" in bad_request_fields(err) and "resnet18" in err.details()
        err = refused(lambda: check(C.TASK_TYPE_OBJECT_DETECTION, "resnet18"))
        assert "model" in bad_request_fields(err) and "image_classification" in err.details()
    finally:
        if trainer is not None:
            trainer.kill()
        cleanup()


# -- accounts --------------------------------------------------------------------------------


def register(srv, username, password=PASSWORD):
    auth, _ = srv.anonymous()
    return auth.Register(auth_pb2.RegisterRequest(username=username, password=password))


def login(srv, username, password=PASSWORD):
    auth, _ = srv.anonymous()
    return auth.Login(auth_pb2.LoginRequest(username=username, password=password))


def test_usernames_are_normalized_and_unique_regardless_of_case(server):
    user = register(server, "  Wanda.B ").user
    assert user.username == "Wanda.B"
    for twin in ("wanda.b", "WANDA.B", "Wanda.B\n", "\tWanda.B", "Ｗａｎｄａ.Ｂ"):
        refused(lambda t=twin: register(server, t), grpc.StatusCode.ALREADY_EXISTS)
    for bad in ("wa\x00nda", "wa\nnda", "wa nda", "w" * 65, "x" * 10_000):
        assert "username" in field_of(lambda b=bad: register(server, b))
    # Signing in by any spelling reaches the one account.
    for spelling in ("wanda.b", " WANDA.B\n", "Ｗａｎｄａ.Ｂ"):
        assert login(server, spelling).user.username == "Wanda.B"


def test_password_policy(server):
    for password, why in [
        ("password123", "common"),
        ("Qwerty123", "common"),
        ("   abc    ", "at least 8"),
        ("\t 1234567 \n", "at least 8"),
        ("hector.lamb", "username"),
        ("x" * 1025, "at most"),
    ]:
        fields = field_of(lambda p=password: register(server, "hector.lamb", p))
        assert why in fields["password"], (password, fields)
    assert register(server, "hector.lamb", "  long enough phrase  ").user.username == "hector.lamb"
    assert login(server, "hector.lamb", "  long enough phrase  ")


def test_sign_in_attempts_are_slowed_per_account_and_per_client(tmp_path):
    srv, cleanup = start_dataset_server(
        DEFAULT_BACKEND,
        tmp_path / "home",
        extra_env={
            "VISIONMESH_LOGIN_MAX_FAILURES": "3",
            "VISIONMESH_LOGIN_CLIENT_MAX_FAILURES": "7",
        },
    )
    try:
        for name in ("ivy", "jay", "kim"):
            register(srv, name)
        for _ in range(3):
            refused(lambda: login(srv, "ivy", "wrong password"), grpc.StatusCode.UNAUTHENTICATED)
        # Locked: even the right password waits, and the message says how long.
        err = refused(lambda: login(srv, "IVY"), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "retry after 1 s" in err.details() and "account" in err.details()
        assert login(srv, "jay")  # other accounts are not affected
        time.sleep(1.1)
        refused(lambda: login(srv, "ivy", "wrong again"), grpc.StatusCode.UNAUTHENTICATED)
        err = refused(lambda: login(srv, "ivy"), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "retry after 2 s" in err.details()  # doubled
        time.sleep(2.1)
        assert login(srv, "ivy").user.username == "ivy"  # and a success clears it
        # Per client: 4 failures so far from this address; 3 more over other accounts.
        for name in ("jay", "kim", "nobody"):
            refused(lambda n=name: login(srv, n, "guess-1234"), grpc.StatusCode.UNAUTHENTICATED)
        err = refused(lambda: login(srv, "kim"), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "client" in err.details()
    finally:
        cleanup()


def test_sign_in_behind_a_trusted_proxy_counts_the_forwarded_client(tmp_path):
    srv, cleanup = start_dataset_server(
        DEFAULT_BACKEND,
        tmp_path / "home",
        extra_env={
            "VISIONMESH_LOGIN_CLIENT_MAX_FAILURES": "2",
            # a range, as for gateway pods on Kubernetes (deploy/)
            "VISIONMESH_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.0/8",
        },
    )
    try:
        register(srv, "lou")
        auth, _ = srv.anonymous()

        def attempt(password, forwarded):
            return auth.Login(
                auth_pb2.LoginRequest(username="lou", password=password),
                metadata=[("x-forwarded-for", forwarded)],
            )

        for _ in range(2):
            refused(lambda: attempt("nope-nope", "203.0.113.9"), grpc.StatusCode.UNAUTHENTICATED)
        err = refused(
            lambda: attempt(PASSWORD, "198.51.100.1, 203.0.113.9"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert "client" in err.details()
        assert attempt(PASSWORD, "203.0.113.10").user.username == "lou"  # another browser
    finally:
        cleanup()


def test_trusted_proxies_take_addresses_and_ranges_and_refuse_anything_else():
    from dataset_svc.settings import parse_networks
    from dataset_svc.users import login_client

    nets = parse_networks("VISIONMESH_TRUSTED_PROXIES", " 10.1.0.0/16, 192.0.2.7,fd00::/8 ")
    fwd = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")]
    assert login_client("ipv4:10.1.200.3:5123", fwd, nets) == "203.0.113.9"
    assert login_client("ipv4:192.0.2.7:5123", fwd, nets) == "203.0.113.9"
    assert login_client("ipv6:[fd00::1]:5123", fwd, nets) == "203.0.113.9"
    assert login_client("ipv4:10.2.0.1:5123", fwd, nets) == "10.2.0.1"  # outside the range
    assert login_client("unix:/tmp/s", fwd, nets) == "unix:/tmp/s"
    assert parse_networks("X", "") == ()
    with pytest.raises(ValueError, match="VISIONMESH_TRUSTED_PROXIES: 'gateway'"):
        parse_networks("VISIONMESH_TRUSTED_PROXIES", "10.0.0.0/8,gateway")


def test_common_password_list_ships_with_the_package():
    from dataset_svc import users

    listed = users.common_passwords()
    assert 300 <= len(listed) and {"123456", "password", "qwerty123"} <= listed
    assert Path(users.COMMON_PASSWORDS_FILE).is_file()


# -- latency caches never serve stale data ---------------------------------------------------


def test_cached_dataset_summaries_follow_every_change(server):
    alice, bob = server.user("alice"), server.user("bob")
    ds = alice.create_dataset("cached", visibility=C.VISIBILITY_PUBLIC)

    def get(client=alice):
        for _ in range(3):  # the first call fills the caches, the others read them
            got = client.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
        return got

    def listed(client=alice):
        for _ in range(3):
            page = client.datasets.ListDatasets(
                D.ListDatasetsRequest(filter='display_name="cached"')
            )
        return {d.name: d for d in page.datasets}[ds.name]

    assert (get().image_count, listed(bob).image_count) == (0, 0)
    alice.upload(ds.name, {"a.png": image_bytes(8, 8), "b.png": image_bytes(8, 8, (1, 1, 1))})
    assert (get().image_count, get(bob).image_count, listed().image_count) == (2, 2, 2)
    alice.datasets.ImportAnnotations(
        import_request(ds.name, coco([{"id": 1, "name": "k"}], ["a.png", "b.png"]))
    )
    got = get()
    assert got.annotation_count == 2 and [c.name for c in got.categories] == ["k"]
    assert got.health.class_counts[0].annotation_count == 2 and listed(bob).labeled
    alice.datasets.DeleteImages(D.DeleteImagesRequest(parent=ds.name, images=["a.png"]))
    got = get(bob)
    assert (got.image_count, got.annotation_count, listed().annotation_count) == (1, 1, 1)
    update = D.UpdateDatasetRequest(
        dataset=D.Dataset(name=ds.name, display_name="renamed", visibility=C.VISIBILITY_PRIVATE)
    )
    update.update_mask.paths.extend(["display_name", "visibility"])
    alice.datasets.UpdateDataset(update)
    assert get().display_name == "renamed"
    refused(lambda: get(bob), grpc.StatusCode.NOT_FOUND)  # private now
    page = bob.datasets.ListDatasets(D.ListDatasetsRequest(filter='display_name="renamed"'))
    assert (list(page.datasets), page.total_size) == ([], 0)
    # The total comes with the page; a page past the end (rows deleted meanwhile) counts.
    carol = server.user("carol")
    keep, gone = carol.create_dataset("keep"), carol.create_dataset("gone")
    mine = f'owner="users/{carol.username}"'
    first = carol.datasets.ListDatasets(
        D.ListDatasetsRequest(page_size=1, order_by="display_name", filter=mine)
    )
    assert first.total_size == 2 and [d.name for d in first.datasets] == [gone.name]
    carol.datasets.DeleteDataset(D.DeleteDatasetRequest(name=keep.name))
    second = carol.datasets.ListDatasets(
        D.ListDatasetsRequest(
            page_size=1, order_by="display_name", filter=mine, page_token=first.next_page_token
        )
    )
    assert (list(second.datasets), second.total_size, second.next_page_token) == ([], 1, "")
