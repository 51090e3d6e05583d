"""The REST gateway end to end: a real ``python -m gateway`` in front of real dataset_svc and
timm trainer processes, driven with plain HTTP (httpx) the way a browser or curl would.

One stack per module (dataset_svc, the timm trainer, the gateway) and one short training
job reused by the job tests: sign-in, dataset CRUD with pagination, a multipart folder
upload of ../shared/data images with their folders kept, import, snapshot, diff, export and
the zip's download, training followed over SSE and NDJSON (a reconnect with Last-Event-ID
resumes), best.pt downloaded, Predict with an image, cancel, and errors mapped to HTTP
statuses with google.rpc.Status bodies whose field violations keep their paths.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
import zipfile

import httpx
import pytest

from tests._dataset import image_bytes, shared_data, start_dataset_server
from tests._gateway import multipart_files, sign_in, sse_events, start_gateway
from tests._servers import ROOT, run_without_heavy_modules
from tests._trainers import shapes_dataset, start_trainer

pytestmark = pytest.mark.timeout(900)

EPOCHS = 2
TRAIN = {"model": "test_resnet", "epochs": EPOCHS, "batchSize": 4, "imageSize": 64, "seed": 1}


class Stack:
    def __init__(self, dataset, trainer, gateway) -> None:
        self.dataset, self.trainer, self.gateway = dataset, trainer, gateway
        self.users: dict[str, str] = {}

    def token(self, name: str) -> str:
        if name not in self.users:
            with self.gateway.client() as http:
                self.users[name] = sign_in(http, f"{name}{uuid.uuid4().hex[:6]}")
        return self.users[name]

    def http(self, name: str | None = "alice") -> httpx.Client:
        return self.gateway.client(self.token(name) if name else None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    dataset, cleanup = start_dataset_server("sqlite+local", tmp_path_factory.mktemp("gw-home"))
    trainer = yolo = gateway = None
    try:
        trainer = start_trainer("timm", dataset, guard_dir=tmp_path_factory.mktemp("guard"))
        yolo = start_trainer("ultralytics", dataset, guard_dir=tmp_path_factory.mktemp("guard"))
        gateway = start_gateway(dataset.addr, {"timm": trainer.addr, "ultralytics": yolo.addr})
        yield Stack(dataset, trainer, gateway)
        assert trainer.network_attempts() == [], trainer.network_attempts()
        assert yolo.network_attempts() == [], yolo.network_attempts()
    finally:
        if gateway is not None:
            assert gateway.stop() == 0, gateway.log()[-2000:]
        for server in (trainer, yolo):
            if server is not None and server.process.proc.poll() is None:
                server.stop()
        cleanup()


def status_of(reply: httpx.Response) -> dict:
    body = reply.json()
    assert set(body) >= {"code", "message", "details"}, body
    return body


def violations(reply: httpx.Response) -> list[str]:
    return [
        v["field"]
        for d in status_of(reply)["details"]
        if d.get("@type", "").endswith("google.rpc.BadRequest")
        for v in d.get("fieldViolations", [])
    ]


# -- the process ---------------------------------------------------------------------------


def test_gateway_imports_and_builds_its_app_without_torch():
    code = "import gateway.__main__, gateway.app\ngateway.app.create_app()\nprint('ok')\n"
    assert run_without_heavy_modules(code).strip() == "ok"


def test_healthz_reports_every_backend(stack):
    with stack.http(None) as http:
        reply = http.get("/healthz")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "SERVING"
    assert body["backends"]["dataset_svc"] == {
        "address": stack.dataset.addr,
        "status": "SERVING",
    }
    assert body["backends"]["trainers/timm"]["status"] == "SERVING"
    assert body["backends"]["trainers/ultralytics"]["status"] == "SERVING"


def test_capabilities_are_routed_by_framework(stack):
    with stack.http() as http:
        for framework in ("timm", "ultralytics"):
            reply = http.get(f"/v1/trainers/{framework}:capabilities")
            assert reply.status_code == 200, reply.text
            assert reply.json()["framework"] == framework
            assert reply.json()["models"]
        unknown = http.get("/v1/trainers/caffe:capabilities")
    assert unknown.status_code == 404
    assert "trainers/timm" in unknown.json()["message"]


def test_healthz_is_503_when_a_backend_is_down(stack):
    gateway = start_gateway(stack.dataset.addr, {"timm": stack.trainer.addr, "hf": "127.0.0.1:9"})
    try:
        reply = httpx.get(gateway.url + "/healthz", timeout=30)
    finally:
        gateway.stop()
    assert reply.status_code == 503
    backends = reply.json()["backends"]
    assert backends["trainers/hf"]["status"].startswith("UNREACHABLE")
    assert backends["dataset_svc"]["status"] == "SERVING"


def test_openapi_is_valid_and_lists_the_annotated_routes(stack):
    from openapi_spec_validator import validate

    with stack.http(None) as http:
        doc = http.get("/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    assert "get" in paths["/v1/datasets/{dataset_id}"]
    assert "patch" in paths["/v1/datasets/{dataset_id}"]
    assert "post" in paths["/v1/datasets/{dataset_id}/snapshots/{snapshot_id}:export"]  # extra
    assert "get" in paths["/v1/trainers/{trainer_id}/jobs/{job_id}:streamMetrics"]
    upload = paths["/v1/datasets/{dataset_id}/images:upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    listing = {p["name"] for p in paths["/v1/datasets"]["get"]["parameters"]}
    assert {"page_size", "page_token", "filter", "order_by"} <= listing
    dataset = doc["components"]["schemas"]["visionmesh.v1.Dataset"]["properties"]
    assert dataset["imageCount"]["type"] == "string"  # int64 as a string
    assert dataset["createTime"]["format"] == "date-time"
    assert "VISIBILITY_PUBLIC" in dataset["visibility"]["enum"]


def test_web_ui_is_served_without_shadowing_the_api(stack):
    web = ROOT / "gateway" / "web"
    with stack.http(None) as http:
        index = http.get("/")
        if not (web / "index.html").exists():
            pytest.skip("gateway/web/index.html is not there yet")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        js = next(iter(sorted(web.glob("*.js"))), None)
        if js is not None:
            reply = http.get(f"/{js.name}")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/javascript")
            assert reply.content == js.read_bytes()
        assert http.get("/openapi.json").headers["content-type"] == "application/json"
        assert http.get("/v1/no-such-route").status_code == 404
        assert http.get("/v1/no-such-route").json()["code"] == 5


# -- auth and datasets ---------------------------------------------------------------------


def test_sign_in_and_tokens(stack):
    with stack.http(None) as http:
        name = f"bob{uuid.uuid4().hex[:6]}"
        created = http.post("/v1/auth:register", json={"username": name, "password": "pw"})
        assert created.status_code == 400  # password too short: INVALID_ARGUMENT
        assert status_of(created)["code"] == 3
        token = sign_in(http, name)
        again = http.post("/v1/auth:register", json={"username": name, "password": "x" * 12})
        assert again.status_code == 409 and status_of(again)["code"] == 6
        wrong = http.post("/v1/auth:login", json={"username": name, "password": "nope-nope"})
        assert wrong.status_code == 401
        no_token = http.get("/v1/datasets")
        assert no_token.status_code == 401 and status_of(no_token)["code"] == 16
        forged = http.get("/v1/auth:whoami", headers={"Authorization": "Bearer abc.def.ghi"})
        assert forged.status_code == 401
        me = http.get("/v1/auth:whoami", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == name
    assert me.json()["user"]["createTime"].endswith("Z")  # RFC 3339


def test_dataset_crud_with_pagination(stack):
    with stack.http("crud") as http:
        names = []
        for i in range(3):
            reply = http.post(
                "/v1/datasets",
                json={"display_name": f"pets-{i}", "visibility": "VISIBILITY_PRIVATE"},
            )
            assert reply.status_code == 200, reply.text
            created = reply.json()["dataset"]
            assert created["displayName"] == f"pets-{i}" and created["name"].startswith("datasets/")
            assert created["imageCount"] == "0"  # int64 as a string, defaults printed
            names.append(created["name"])
        first = http.get("/v1/datasets", params={"pageSize": 2}).json()
        assert len(first["datasets"]) == 2 and first["nextPageToken"]
        second = http.get(
            "/v1/datasets", params={"page_size": 2, "page_token": first["nextPageToken"]}
        ).json()
        listed = [d["name"] for d in first["datasets"] + second["datasets"]]
        assert sorted(listed) == sorted(names) and not second["nextPageToken"]
        assert listed == names[::-1]  # newest first
        filtered = http.get("/v1/datasets", params={"filter": 'display_name:"pets-1"'}).json()
        assert [d["name"] for d in filtered["datasets"]] == [names[1]]

        got = http.get(f"/v1/{names[0]}")
        assert got.status_code == 200 and got.json()["dataset"]["displayName"] == "pets-0"
        patched = http.patch(
            f"/v1/{names[0]}",
            params={"updateMask": "displayName,visibility"},
            json={"displayName": "renamed", "visibility": "VISIBILITY_PUBLIC"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["dataset"]["displayName"] == "renamed"
        assert patched.json()["dataset"]["visibility"] == "VISIBILITY_PUBLIC"
        deleted = http.delete(f"/v1/{names[2]}")
        assert deleted.status_code == 200 and deleted.json() == {}
        gone = http.get(f"/v1/{names[2]}")
        assert gone.status_code == 404 and status_of(gone)["code"] == 5


def test_another_users_private_dataset_is_404_and_public_is_readable(stack):
    with stack.http("owner") as owner:
        private = owner.post("/v1/datasets", json={"displayName": "secret"}).json()["dataset"][
            "name"
        ]
        public = owner.post(
            "/v1/datasets", json={"displayName": "open", "visibility": "VISIBILITY_PUBLIC"}
        ).json()["dataset"]["name"]
    with stack.http("stranger") as stranger:
        hidden = stranger.get(f"/v1/{private}")
        assert hidden.status_code == 404 and status_of(hidden)["code"] == 5
        assert stranger.get(f"/v1/{public}").status_code == 200
        denied = stranger.delete(f"/v1/{public}")
        assert denied.status_code == 403 and status_of(denied)["code"] == 7


def test_request_errors_map_to_400_with_field_paths(stack):
    with stack.http("errors") as http:
        bad_json = http.post(
            "/v1/datasets", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400 and status_of(bad_json)["code"] == 3
        unknown_field = http.post("/v1/datasets", json={"displayNam": "x"})
        assert unknown_field.status_code == 400
        assert "displayNam" in status_of(unknown_field)["message"]
        bad_enum = http.get("/v1/datasets", params={"pageSize": "many"})
        assert bad_enum.status_code == 400 and violations(bad_enum) == ["page_size"]
        assert http.put("/v1/datasets/x").status_code == 405
        unknown = http.get("/v1/trainers/caffe/jobs")
        assert unknown.status_code == 404
        assert "trainers/timm" in status_of(unknown)["message"]  # names the known ones
        name = http.post("/v1/datasets", json={"displayName": "bad-doc"}).json()["dataset"]["name"]
        http.post(
            f"/v1/{name}/images:upload",
            files=multipart_files([("train/a.png", image_bytes(16, 16))]),
        )
        document = {
            "images": [{"id": 1, "file_name": "train/a.png", "width": 16, "height": 16}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, -4, 2]}],
        }
        reply = http.post(
            f"/v1/{name}:importAnnotations",
            json={
                "files": [
                    {
                        "path": "annotations.json",
                        "content": base64.b64encode(json.dumps(document).encode()).decode(),
                    }
                ]
            },
        )
    assert reply.status_code == 400, reply.text
    assert status_of(reply)["code"] == 3
    assert any(path.startswith("annotations[0].bbox") for path in violations(reply)), reply.text


# -- a folder of real images ---------------------------------------------------------------


def test_folder_upload_import_snapshot_diff_export_download(stack):
    folder = shared_data("det-coco8")
    images = sorted(p for p in (folder / "images").rglob("*") if p.suffix == ".jpg")
    labels = sorted((folder / "labels").rglob("*.txt"))
    with stack.http("uploader") as http:
        name = http.post("/v1/datasets", json={"displayName": "coco8"}).json()["dataset"]["name"]
        files = [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in images]
        reply = http.post(f"/v1/{name}/images:upload", files=multipart_files(files))
        assert reply.status_code == 200, reply.text
        uploaded = reply.json()
        assert {i["path"] for i in uploaded["images"]} == {p for p, _ in files}
        assert int(uploaded["receivedBytes"]) == sum(len(b) for _, b in files)
        listing = http.get(f"/v1/{name}/images", params={"pageSize": 100}).json()
        assert {i["path"] for i in listing["images"]} == {p for p, _ in files}  # folders kept
        assert {i["split"] for i in listing["images"]} == {"train", "val"}

        first = http.post(f"/v1/{name}/snapshots", json={"versionName": "v1"})
        assert first.status_code == 200, first.text
        imported = http.post(
            f"/v1/{name}:importAnnotations",
            json={
                "files": [
                    {
                        "path": p.relative_to(folder).as_posix(),
                        "content": base64.b64encode(p.read_bytes()).decode(),
                    }
                    for p in labels
                ],
                "format": "ANNOTATION_FORMAT_YOLO",
                "classNames": [f"c{i}" for i in range(80)],
                "allowWarnings": True,
            },
        )
        assert imported.status_code == 200, imported.text
        assert imported.json()["variant"].startswith("yolo")
        assert imported.json()["annotationCount"] > 0
        second = http.post(f"/v1/{name}/snapshots", json={"versionName": "v2"}).json()["snapshot"]
        diff = http.get(
            f"/v1/{first.json()['snapshot']['name']}:diff", params={"target": second["name"]}
        )
        assert diff.status_code == 200, diff.text
        assert diff.json()["addedAnnotationCount"] == imported.json()["annotationCount"]

        thumb = http.get(
            f"/v1/{listing['images'][0]['name']}:content", params={"thumbnail_size": 64}
        )
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"
        original = http.get(f"/v1/{listing['images'][0]['name']}:content")
        assert original.content == dict(files)[listing["images"][0]["path"]]

        export = http.post(
            f"/v1/{second['name']}:export", json={"format": "ANNOTATION_FORMAT_COCO"}
        )
        assert export.status_code == 200, export.text
        zipped = http.get(f"/v1/{export.json()['export']}:download")
        assert zipped.status_code == 200, zipped.text
        assert zipped.headers["content-type"] == "application/zip"
        assert "attachment" in zipped.headers["content-disposition"]
        assert ".zip" in zipped.headers["content-disposition"]
        assert int(export.json()["sizeBytes"]) == len(zipped.content)
        entries = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
        assert any(e.endswith(".json") for e in entries)
        assert sum(e.endswith(".jpg") for e in entries) == len(files)
    with stack.http("someone-else") as other:
        assert other.get(f"/v1/{export.json()['export']}:download").status_code == 404


def test_upload_streams_many_and_big_files_and_a_broken_body_commits_nothing(stack):
    big = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB: split across messages
    small = [(f"train/{i:03d}.png", image_bytes(8, 8, (i, 0, 0))) for i in range(40)]
    with stack.http("streamer") as http:
        name = http.post("/v1/datasets", json={"displayName": "many"}).json()["dataset"]["name"]
        body = multipart_files([*small, ("val/big.bin", big)])
        reply = http.post(f"/v1/{name}/images:upload", files=body, params={"path_prefix": "pre"})
        assert reply.status_code == 200, reply.text
        paths = {i["path"] for i in reply.json()["images"]}
        assert paths == {f"pre/{p}" for p, _ in small}
        skipped = {s["path"] for s in reply.json()["skipped"]}
        assert "pre/val/big.bin" in skipped  # not an image: refused by dataset_svc, by name
        # a body cut before its closing boundary: 400 and nothing committed
        name2 = http.post("/v1/datasets", json={"displayName": "cut"}).json()["dataset"]["name"]
        boundary = "XyZ"
        cut = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="train/a.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode() + image_bytes(8, 8)
        reply = http.post(
            f"/v1/{name2}/images:upload",
            content=cut,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert reply.status_code == 400, reply.text
        assert http.get(f"/v1/{name2}/images").json()["images"] == []
        not_multipart = http.post(f"/v1/{name2}/images:upload", json={"a": 1})
        assert not_multipart.status_code == 400


# -- training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(stack):
    """One short timm job on shapes uploaded and imported over REST; (http client, job)."""
    files, document = shapes_dataset(12, size=64)
    http = stack.http("trainer")
    name = http.post("/v1/datasets", json={"displayName": "shapes"}).json()["dataset"]["name"]
    reply = http.post(f"/v1/{name}/images:upload", files=multipart_files(sorted(files.items())))
    assert reply.status_code == 200, reply.text
    content = base64.b64encode(json.dumps(document).encode()).decode()
    reply = http.post(
        f"/v1/{name}:importAnnotations",
        json={"files": [{"path": "annotations.json", "content": content}], "allowWarnings": True},
    )
    assert reply.status_code == 200, reply.text
    reply = http.post(
        "/v1/trainers/timm/jobs",
        json={
            "requestId": uuid.uuid4().hex,
            "spec": {**TRAIN, "dataset": name, "taskType": "TASK_TYPE_IMAGE_CLASSIFICATION"},
        },
    )
    assert reply.status_code == 200, reply.text
    started = reply.json()["job"]
    assert started["name"].startswith("trainers/timm/jobs/")
    yield http, started, files
    http.close()


def finished(http: httpx.Client, name: str, timeout: float = 600) -> dict:
    """The job once it has ended (polled over REST)."""
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/{name}").json()["job"]
        if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def test_training_followed_over_sse_each_epoch_once(job):
    http, started, _ = job
    with http.stream(
        "GET",
        f"/v1/{started['name']}:streamMetrics",
        headers={"Accept": "text/event-stream"},
        timeout=900,
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = sse_events(reply.iter_lines())
    data = [e for e in events if e.get("data")]
    epochs = [json.loads(e["data"])["metrics"]["epoch"] for e in data if "metrics" in e["data"]]
    assert epochs == list(range(1, EPOCHS + 1))
    for e in data:
        message = json.loads(e["data"])
        if message.get("metrics", {}).get("epoch"):
            assert e["id"] == str(message["metrics"]["epoch"])
            assert "val/top1" in message["metrics"]["values"]
    assert events[-1].get("event") == "end"
    final = http.get(f"/v1/{started['name']}").json()["job"]
    assert final["state"] == "JOB_STATE_SUCCEEDED", final
    assert final["currentEpoch"] == EPOCHS


def test_sse_reconnect_resumes_and_ndjson_replays(job):
    http, started, _ = job
    finished(http, started["name"])
    url = f"/v1/{started['name']}:streamMetrics"
    with http.stream(
        "GET", url, headers={"Accept": "text/event-stream", "Last-Event-ID": "1"}
    ) as reply:
        events = sse_events(reply.iter_lines())
    resumed = [json.loads(e["data"]) for e in events if e.get("data")]
    assert [m["metrics"]["epoch"] for m in resumed if "metrics" in m] == list(range(2, EPOCHS + 1))
    with http.stream(
        "GET", url, headers={"Accept": "text/event-stream", "Last-Event-ID": str(EPOCHS)}
    ) as reply:
        events = [e for e in sse_events(reply.iter_lines()) if e.get("data")]
    assert events and all("metrics" not in json.loads(e["data"]) for e in events)
    assert all(e["id"] == str(EPOCHS) for e in events)  # a state-only event never goes back
    bad = http.get(url, headers={"Accept": "text/event-stream", "Last-Event-ID": "soon"})
    assert bad.status_code == 400
    with http.stream("GET", url) as reply:  # no text/event-stream: NDJSON
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in reply.iter_lines() if line.strip()]
    assert all("result" in line for line in lines)
    epochs = [line["result"]["metrics"]["epoch"] for line in lines if "metrics" in line["result"]]
    assert epochs == list(range(1, EPOCHS + 1))
    logs = http.get(f"/v1/{started['name']}:streamLogs")
    assert logs.status_code == 200 and "result" in logs.text


def test_jobs_listed_across_trainers_and_best_pt_downloaded(job):
    http, started, _ = job
    listed = http.get("/v1/trainers/-/jobs", params={"pageSize": 1})
    assert listed.status_code == 200, listed.text
    assert [j["name"] for j in listed.json()["jobs"]] == [started["name"]]
    final = finished(http, started["name"])
    best = next(c for c in final["checkpoints"] if c["filename"] == "best.pt")
    reply = http.get(f"/v1/{best['name']}:download")
    assert reply.status_code == 200, reply.text
    assert 'filename="best.pt"' in reply.headers["content-disposition"]
    assert len(reply.content) == int(best["sizeBytes"]) and reply.content[:2] == b"PK"  # torch zip
    wrong = http.get(f"/v1/{started['name'].replace('/timm/', '/hf/')}")
    assert wrong.status_code == 404  # no hf trainer behind this gateway


def test_predict_with_an_uploaded_image(job):
    http, started, files = job
    finished(http, started["name"])
    image = base64.b64encode(next(iter(files.values()))).decode()
    reply = http.post(
        f"/v1/{started['name']}:predict", json={"image": image, "confidenceThreshold": 0.0001}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["taskType"] == "TASK_TYPE_IMAGE_CLASSIFICATION"
    assert body["classes"] and body["imageWidth"] == 64
    bad = http.post(f"/v1/{started['name']}:predict", json={"image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 400, bad.text


def test_cancel_a_job_and_other_users_cannot_see_it(stack, job):
    http, started, _ = job
    dataset = http.get(f"/v1/{started['name']}").json()["job"]["spec"]["dataset"]
    reply = http.post(
        "/v1/trainers/timm/jobs",
        json={
            "requestId": uuid.uuid4().hex,
            "spec": {
                **TRAIN,
                "epochs": 50,
                "dataset": dataset,
                "taskType": "TASK_TYPE_IMAGE_CLASSIFICATION",
            },
        },
    )
    assert reply.status_code == 200, reply.text
    name = reply.json()["job"]["name"]
    with stack.http("stranger") as stranger:
        assert stranger.get(f"/v1/{name}").status_code == 404
        assert stranger.post(f"/v1/{name}:cancel", json={}).status_code == 404
    cancelled = http.post(f"/v1/{name}:cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = http.get(f"/v1/{name}").json()["job"]["state"]
        if state == "JOB_STATE_CANCELLED":
            break
        time.sleep(0.5)
    assert state == "JOB_STATE_CANCELLED"
    listed = http.get("/v1/trainers/-/jobs").json()["jobs"]
    assert [j["name"] for j in listed][:2] == [name, started["name"]]


def test_no_token_is_401_on_trainer_routes(stack, job):
    _, started, _ = job
    with stack.http(None) as anonymous:
        reply = anonymous.get(f"/v1/{started['name']}")
    assert reply.status_code == 401 and status_of(reply)["code"] == 16


def created(job: dict) -> float:
    """createTime (RFC 3339, 0-9 fractional digits) as seconds."""
    from datetime import datetime

    stamp = job["createTime"].removesuffix("Z")
    whole, _, fraction = stamp.partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def test_trainers_dash_merges_every_trainer_newest_first_across_pages(job):
    http, started, _ = job
    dataset = http.get(f"/v1/{started['name']}").json()["job"]["spec"]["dataset"]
    reply = http.post(
        "/v1/trainers/ultralytics/jobs",
        json={
            "requestId": uuid.uuid4().hex,
            "spec": {
                "dataset": dataset,
                "taskType": "TASK_TYPE_OBJECT_DETECTION",
                "model": "yolo11n",
                "epochs": 1,
                "imageSize": 64,
                "batchSize": 4,
            },
        },
    )
    assert reply.status_code == 200, reply.text
    yolo_job = reply.json()["job"]["name"]
    assert yolo_job.startswith("trainers/ultralytics/jobs/")
    assert http.post(f"/v1/{yolo_job}:cancel", json={}).status_code == 200
    reply = http.post(
        "/v1/trainers/timm/jobs",
        json={
            "requestId": uuid.uuid4().hex,
            "spec": {**TRAIN, "dataset": dataset, "taskType": "TASK_TYPE_IMAGE_CLASSIFICATION"},
        },
    )
    assert reply.status_code == 200, reply.text
    assert http.post(f"/v1/{reply.json()['job']['name']}:cancel", json={}).status_code == 200
    every = []
    for framework in ("timm", "ultralytics"):
        every += http.get(f"/v1/trainers/{framework}/jobs", params={"pageSize": 100}).json()["jobs"]
    expected = [j["name"] for j in sorted(every, key=lambda j: (-created(j), j["name"]))]
    assert len(expected) >= 3 and yolo_job in expected and started["name"] in expected
    names, token, pages = [], "", 0
    while True:
        page = http.get("/v1/trainers/-/jobs", params={"pageSize": 1, "pageToken": token})
        assert page.status_code == 200, page.text
        names += [j["name"] for j in page.json()["jobs"]]
        token = page.json()["nextPageToken"]
        pages += 1
        if not token:
            break
    assert names == expected and pages >= len(expected)
    two = http.get("/v1/trainers/-/jobs", params={"pageSize": 2}).json()
    assert [j["name"] for j in two["jobs"]] == expected[:2]
    bad = http.get("/v1/trainers/-/jobs", params={"pageToken": "bm9wZQ"})
    assert bad.status_code == 400 and violations(bad) == ["page_token"]
