"""The web UI in headless Chromium against the real gateway, dataset_svc and ultralytics trainer.

What a user does, through the browser only (the REST API is used to check what the page
shows, and to prepare data where the page is not what is tested): sign in, manage
datasets, upload a folder of real COCO images and their YOLO labels, see the boxes drawn
where the labels put them, snapshots/compatibility/integrity/export, then a short
training whose chart receives every epoch, stop early, download best.pt and predict.
axe-core runs on every page (no serious or critical violations); every page is saved as a
screenshot under var/screenshots/.
"""

from __future__ import annotations

import base64
import json
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from tests._browser import (
    assert_accessible,
    launch_browser,
    new_page,
    require_browser,
    screenshot,
)
from tests._dataset import DEFAULT_BACKEND, PASSWORD, dataset_server_fixture, shared_data
from tests._gateway import start_gateway
from tests._trainers import start_trainer

pytestmark = pytest.mark.timeout(600)

dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


def coco_names() -> list[str]:
    """The 80 COCO class names, in order (det-coco8 ships no data.yaml)."""
    import yaml

    spec = __import__("importlib.util").util.find_spec("ultralytics")
    if spec is None or not spec.origin:
        pytest.skip("ultralytics is not installed")
    path = Path(spec.origin).parent / "cfg" / "datasets" / "coco8.yaml"
    return list(yaml.safe_load(path.read_text())["names"].values())


@pytest.fixture(scope="module")
def mesh(dataset_server):
    require_browser()
    trainer = start_trainer("ultralytics", dataset_server)
    gateway = start_gateway(dataset_server.addr, {"ultralytics": trainer.addr})
    try:
        yield gateway
    finally:
        gateway.stop()
        trainer.stop()


@pytest.fixture(scope="module")
def browser(mesh):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        try:
            yield b
        finally:
            b.close()


class Api:
    """A signed-in REST client (to check what the page shows against the gateway)."""

    def __init__(self, url: str, username: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.username = username
        self.http.post("/v1/auth:register", json={"username": username, "password": PASSWORD})
        reply = self.login(PASSWORD)
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["accessToken"]
        self.user = reply.json().get("user") or {"username": username}
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def login(self, password: str) -> httpx.Response:
        return self.http.post(
            "/v1/auth:login", json={"username": self.username, "password": password}
        )

    def get(self, path: str, **params) -> dict:
        reply = self.http.get(path, params=params)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def post(self, path: str, body: dict) -> dict:
        reply = self.http.post(path, json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def coco8(self, display_name: str) -> dict:
        """A dataset holding det-coco8's images (train/val kept) and its YOLO labels."""
        root = shared_data("det-coco8")
        ds = self.post("/v1/datasets", {"displayName": display_name})
        ds = ds.get("dataset", ds)
        files = [
            ("files", (str(p.relative_to(root)), p.read_bytes(), "image/jpeg"))
            for p in sorted(root.glob("images/*/*.jpg"))
        ]
        reply = self.http.post(f"/v1/{ds['name']}/images:upload", files=files)
        assert reply.status_code == 200, reply.text
        labels = [
            {"path": str(p.relative_to(root)), "content": base64.b64encode(p.read_bytes()).decode()}
            for p in sorted(root.glob("labels/*/*.txt"))
        ]
        self.post(
            f"/v1/{ds['name']}:importAnnotations", {"files": labels, "classNames": coco_names()}
        )
        return ds


def user_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def signed_in_page(browser, mesh, api: Api, path: str):
    page = new_page(browser, mesh.url, api.token, api.user)
    page.goto(path)
    return page


def assert_offline(page) -> None:
    assert page.external_requests == [], page.external_requests
    assert page.console_errors == [], page.console_errors


def assert_every_image_has_alt(page) -> None:
    missing = page.eval_on_selector_all("img", "els => els.filter(e => !e.alt).length")
    assert missing == 0


# -- sign in -------------------------------------------------------------------------------


def test_register_sign_in_errors_and_sign_out(browser, mesh):
    page = new_page(browser, mesh.url)
    page.goto("/")
    page.wait_for_selector("#login-title")
    assert page.inner_text("#login-title") == "Sign in"
    assert_accessible(page, "sign in")
    screenshot(page, "01-sign-in")

    username = user_name("ann")
    page.get_by_role("button", name="New here? Create an account").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register").click()
    # the gateway's own message for the bad password, as the API sends it
    sent = httpx.post(
        f"{mesh.url}/v1/auth:register", json={"username": username, "password": "short"}
    ).json()
    error = page.locator(".form-error")
    error.wait_for()
    assert sent["message"] in error.inner_text() or sent["message"] in page.inner_text("form")
    screenshot(page, "02-register-error")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    page.wait_for_selector("h1:text-is('Datasets')")
    assert username in page.inner_text("#who")
    token = page.evaluate("sessionStorage.getItem('visionmesh.token')")
    who = httpx.get(f"{mesh.url}/v1/auth:whoami", headers={"Authorization": f"Bearer {token}"})
    assert who.json()["user"]["username"] == username

    # keyboard only: sign out, then sign in with Tab and Enter
    page.get_by_role("button", name="Sign out").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#login-title")
    assert page.evaluate("sessionStorage.getItem('visionmesh.token')") is None
    page.goto("/#/datasets")
    page.wait_for_selector("#login-title")  # signed out: back to sign in
    page.get_by_label("Username").focus()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type("wrong password")
    page.keyboard.press("Enter")
    page.locator(".form-error").wait_for()
    sent = httpx.post(
        f"{mesh.url}/v1/auth:login", json={"username": username, "password": "wrong password"}
    ).json()
    assert sent["message"] in page.inner_text(".form-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("h1:text-is('Datasets')")
    assert_offline(page)


# -- datasets table ----------------------------------------------------------------------------


def test_datasets_create_search_sort_visibility_delete(browser, mesh):
    api = Api(mesh.url, user_name("dora"))
    other = Api(mesh.url, user_name("olaf"))
    shared = other.post(
        "/v1/datasets",
        {"displayName": f"shared-{other.username}", "visibility": "VISIBILITY_PUBLIC"},
    )
    shared = shared.get("dataset", shared)
    page = signed_in_page(browser, mesh, api, "/#/datasets")
    page.wait_for_selector("#datasets-table")
    tag = uuid.uuid4().hex[:6]
    for name in (f"zebras-{tag}", f"apples-{tag}"):
        page.goto("/#/datasets")
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_role("button", name="Create dataset").click()
        page.wait_for_selector(f"h1:text-is('{name}')")
    page.goto("/#/datasets")
    rows = page.locator("#datasets-table tbody tr[data-name]")
    # search narrows to this test's two datasets; sort by name puts apples first
    page.get_by_label("Search by name").fill(tag)
    page.wait_for_function(
        "document.querySelectorAll('#datasets-table tbody tr[data-name]').length === 2"
    )
    page.get_by_label("Sort").select_option("display_name")
    page.wait_for_function(
        "document.querySelector('#datasets-table tbody tr[data-name] th').innerText.startsWith('apples')"
    )
    assert rows.nth(1).locator("th").inner_text() == f"zebras-{tag}"
    page.get_by_label("Sort").select_option("display_name desc")
    page.wait_for_function(
        "document.querySelector('#datasets-table tbody tr[data-name] th').innerText.startsWith('zebras')"
    )
    assert_accessible(page, "datasets")
    screenshot(page, "03-datasets")

    # public/private toggle, checked through the API
    apples = page.locator("#datasets-table tbody tr", has_text=f"apples-{tag}")
    name = apples.get_attribute("data-name")
    assert apples.locator("[data-visibility]").inner_text() == "Private"
    apples.get_by_role("button", name=f"Make public apples-{tag}").click()
    page.wait_for_selector(f"tr[data-name='{name}'] [data-visibility=public]")
    assert api.get(f"/v1/{name}")["dataset"]["visibility"] == "VISIBILITY_PUBLIC"
    # visibility filter: public only shows apples (and not the private zebras)
    page.get_by_label("Filter by visibility").select_option("VISIBILITY_PUBLIC")
    page.wait_for_function(
        "document.querySelectorAll('#datasets-table tbody tr[data-name]').length === 1"
    )
    assert rows.first.get_attribute("data-name") == name

    # another user's public dataset is listed with its owner but offers no owner controls
    page.get_by_label("Search by name").fill(f"shared-{other.username}")
    page.wait_for_selector(f"tr[data-name='{shared['name']}']")
    row = page.locator(f"tr[data-name='{shared['name']}']")
    assert other.username in row.inner_text()
    assert row.locator("[data-visibility]").inner_text() == "Public"
    assert row.get_by_role("button", name=f"Make private shared-{other.username}").count() == 0
    assert row.get_by_role("button", name=f"Delete shared-{other.username}").count() == 0

    # delete with confirmation: Cancel keeps it, Delete removes it
    page.get_by_label("Filter by visibility").select_option("")
    page.get_by_label("Search by name").fill(tag)
    page.wait_for_function(
        "document.querySelectorAll('#datasets-table tbody tr[data-name]').length === 2"
    )
    page.get_by_role("button", name=f"Delete apples-{tag}").click()
    dialog = page.locator("dialog[open]")
    assert f"apples-{tag}" in dialog.inner_text()
    assert_accessible(page, "delete confirmation")
    dialog.get_by_role("button", name="Cancel").click()
    assert api.http.get(f"/v1/{name}").status_code == 200
    page.get_by_role("button", name=f"Delete apples-{tag}").click()
    page.locator("dialog[open]").get_by_role("button", name="Delete").click()
    page.wait_for_function(
        "document.querySelectorAll('#datasets-table tbody tr[data-name]').length === 1"
    )
    assert api.http.get(f"/v1/{name}").status_code == 404
    assert_offline(page)


# -- upload, import, gallery ---------------------------------------------------------------------


def yolo_boxes(root: Path, image: Path) -> list[tuple[int, float, float, float, float]]:
    """(class, x, y, w, h) in pixels from the image's YOLO label file."""
    from PIL import Image

    width, height = Image.open(image).size
    label = root / "labels" / image.parent.name / f"{image.stem}.txt"
    out = []
    for line in label.read_text().split("\n"):
        if line.strip():
            c, cx, cy, w, h = line.split()[:5]
            w_px, h_px = float(w) * width, float(h) * height
            out.append(
                (int(c), float(cx) * width - w_px / 2, float(cy) * height - h_px / 2, w_px, h_px)
            )
    return out


def test_upload_folder_import_labels_and_see_them_drawn(browser, mesh, tmp_path):
    root = shared_data("det-coco8")
    names = coco_names()
    api = Api(mesh.url, user_name("uma"))
    page = signed_in_page(browser, mesh, api, "/#/datasets")
    page.get_by_label("Name", exact=True).fill("coco8 upload")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_selector("h1:text-is('coco8 upload')")
    dataset_id = page.evaluate("location.hash").split("/")[2]
    name = f"datasets/{dataset_id}"

    # the folder picker: images with their structure, labels kept aside, the rest skipped
    page.get_by_role("link", name="Upload").click()
    page.wait_for_selector("#dropzone")
    assert_accessible(page, "upload")
    page.set_input_files("#folder-picker", str(root))
    page.wait_for_selector("#upload-summary")
    assert page.get_attribute("#upload-progress", "value") == "100"
    summary = page.inner_text("#upload-summary")
    assert "8 images added" in summary
    skipped = page.locator("#skipped-files tbody tr")
    skipped_paths = sorted(r.locator("td").first.inner_text() for r in skipped.all())
    assert skipped_paths == ["LICENSE", "README.md"]
    assert all(r.locator("td").nth(1).inner_text().strip() for r in skipped.all())
    images = api.get(f"/v1/{name}/images", pageSize=100)["images"]
    expected_paths = sorted(str(p.relative_to(root)) for p in root.glob("images/*/*.jpg"))
    assert sorted(i["path"] for i in images) == expected_paths
    assert {i["split"] for i in images} == {"train", "val"}
    assert_accessible(page, "upload finished")
    screenshot(page, "04-upload")

    # the labels found in the folder go to the import page; YOLO needs class names
    page.get_by_role("link", name="Import these 8 annotation files…").click()
    page.wait_for_selector("#import-title")
    assert "8 file(s)" in page.inner_text("#import-chosen")
    page.get_by_label("Class names").fill("\n".join(names))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_selector("#import-summary")
    n_boxes = sum(len(yolo_boxes(root, p)) for p in root.glob("images/*/*.jpg"))
    assert f"{n_boxes} annotations" in page.inner_text("#import-summary")
    assert "yolo" in page.inner_text("#import-summary")
    screenshot(page, "05-import")

    # a broken document: refused with each problem listed at its JSON path, as the API says
    image0 = sorted(root.glob("images/train/*.jpg"))[0]
    bad = {
        "images": [
            {"id": 1, "file_name": str(image0.relative_to(root)), "width": 10, "height": 10}
        ],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [-50, 0, 10, 10]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5]},
        ],
    }
    bad_file = tmp_path / "annotations.json"
    bad_file.write_text(json.dumps(bad))
    sent = api.http.post(
        f"/v1/{name}:importAnnotations",
        json={
            "files": [
                {
                    "path": "annotations.json",
                    "content": base64.b64encode(bad_file.read_bytes()).decode(),
                }
            ],
            "replaceExisting": True,
        },
    )
    assert sent.status_code == 400, sent.text
    violations = [v["field"] for d in sent.json()["details"] for v in d.get("fieldViolations", [])]
    assert violations
    page.set_input_files("input[name=files]", str(bad_file))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_selector("#import-problems")
    shown = [c.inner_text() for c in page.locator("#import-problems tbody tr td:first-child").all()]
    assert shown == violations
    assert sent.json()["message"] in page.inner_text(".form-error")
    assert_accessible(page, "import problems")
    screenshot(page, "06-import-problems")
    assert api.get(f"/v1/{name}")["dataset"]["annotationCount"] == str(n_boxes)

    # the gallery: every box drawn where its label puts it
    page.get_by_role("link", name="Gallery").click()
    page.wait_for_selector(".gallery[data-ready]")
    tiles = page.locator(".gallery .tile")
    assert tiles.count() == 8
    for image in sorted(root.glob("images/*/*.jpg")):
        path = str(image.relative_to(root))
        tile = page.locator(f".tile[data-path='{path}']")
        drawn = tile.locator("svg.overlay rect").evaluate_all(
            "els => els.map(e => [e.closest('g').dataset.class, +e.getAttribute('x'),"
            " +e.getAttribute('y'), +e.getAttribute('width'), +e.getAttribute('height')])"
        )
        want = sorted((names[c], x, y, w, h) for c, x, y, w, h in yolo_boxes(root, image))
        assert len(drawn) == len(want), path
        for got, exp in zip(sorted(map(tuple, drawn)), want, strict=True):
            assert got[0] == exp[0]
            assert all(abs(a - b) <= 1.0 for a, b in zip(got[1:], exp[1:], strict=True)), (got, exp)

    # on screen: the first box of a tile sits over the right pixels of the shown thumbnail
    image = sorted(root.glob("images/train/*.jpg"))[0]
    from PIL import Image

    width, height = Image.open(image).size
    tile = page.locator(f".tile[data-path='{image.relative_to(root)}']")
    img_box = tile.locator("img").bounding_box()
    scale = min(img_box["width"] / width, img_box["height"] / height)
    left = img_box["x"] + (img_box["width"] - width * scale) / 2
    top = img_box["y"] + (img_box["height"] - height * scale) / 2
    for rect in tile.locator("svg.overlay rect").all():
        x, y, w, h = (float(rect.get_attribute(a)) for a in ("x", "y", "width", "height"))
        box = rect.bounding_box()  # includes the 2 px stroke, 1 px each side
        assert abs(box["x"] + 1 - (left + x * scale)) <= 1
        assert abs(box["y"] + 1 - (top + y * scale)) <= 1
        assert abs(box["width"] - 2 - w * scale) <= 1
        assert abs(box["height"] - 2 - h * scale) <= 1
    assert_every_image_has_alt(page)
    assert_accessible(page, "gallery")
    screenshot(page, "07-gallery")

    # a class toggle hides that class's shapes, and only those
    person = page.locator(".gallery g.ann[data-class='person']")
    others = page.locator(".gallery g.ann:not([data-class='person'])")
    assert person.count() > 0 and others.count() > 0
    page.locator(".class-toggles label", has_text="person").locator("input").uncheck()
    assert all(not g.is_visible() for g in person.all())
    assert all(g.is_visible() for g in others.all())
    page.locator(".class-toggles label", has_text="person").locator("input").check()
    assert all(g.is_visible() for g in person.all())

    # the histogram per split matches the dataset's health
    health = api.get(f"/v1/{name}")["dataset"]["health"]
    val_person = next(
        c for c in health["classCounts"] if c["split"] == "val" and c["categoryName"] == "person"
    )
    row = page.locator(".hist", has=page.locator("caption", has_text="val")).locator(
        "tr", has=page.locator("th", has_text="person")
    )
    assert row.locator(".bar-num").inner_text() == str(val_person["annotationCount"])

    # keyboard: Tab to a tile, Enter opens it large with its boxes, Escape closes
    tile.locator("button").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("dialog[open]")
    dialog.wait_for()
    page.wait_for_function(
        f"document.querySelector('dialog[open] .large-img')?.naturalWidth === {width}"
    )
    assert dialog.locator("svg.overlay rect").count() == len(yolo_boxes(root, image))
    assert dialog.locator(".ann-list li").count() == len(yolo_boxes(root, image))
    assert_accessible(page, "large image")
    screenshot(page, "08-image-large")
    page.keyboard.press("Escape")
    assert page.locator("dialog[open]").count() == 0
    assert_offline(page)


def test_drop_images_on_the_upload_zone_and_keyboard_file_picker(browser, mesh):
    from tests._dataset import image_bytes

    api = Api(mesh.url, user_name("dina"))
    ds = api.post("/v1/datasets", {"displayName": "dropped"})
    ds = ds.get("dataset", ds)
    page = signed_in_page(browser, mesh, api, f"/#/datasets/{ds['name'].split('/')[1]}/upload")
    page.wait_for_selector("#dropzone")
    # the pickers open from the keyboard (Tab to them, Enter)
    page.get_by_label("Choose a folder…").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    # a drop of two images (a DataTransfer made in the page, as a file manager would send)
    pngs = {
        "red.png": image_bytes(20, 10, (200, 0, 0)),
        "blue.png": image_bytes(10, 20, (0, 0, 200)),
    }
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const [name, b64] of Object.entries(files)) {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, {type: "image/png"}));
            }
            return dt;
        }""",
        {k: base64.b64encode(v).decode() for k, v in pngs.items()},
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#upload-summary")
    assert "2 images added" in page.inner_text("#upload-summary")
    images = {i["path"]: i for i in api.get(f"/v1/{ds['name']}/images")["images"]}
    assert set(images) == set(pngs)
    assert (images["red.png"]["width"], images["red.png"]["height"]) == (20, 10)
    assert_offline(page)


def test_gallery_draws_polygons_keypoints_and_skeleton(browser, mesh):
    from tests._dataset import image_bytes

    api = Api(mesh.url, user_name("pia"))
    ds = api.post("/v1/datasets", {"displayName": "pose"})
    ds = ds.get("dataset", ds)
    files = [("files", ("train/p.png", image_bytes(80, 60, (90, 90, 90)), "image/png"))]
    assert api.http.post(f"/v1/{ds['name']}/images:upload", files=files).status_code == 200
    polygon = [10, 10, 40, 12, 30, 40, 12, 30]
    keypoints = [20, 15, 2, 30, 25, 2, 25, 35, 1, 0, 0, 0]  # the last one is absent
    doc = {
        "images": [{"id": 1, "file_name": "train/p.png", "width": 80, "height": 60}],
        "categories": [
            {
                "id": 1,
                "name": "body",
                "keypoints": ["head", "hip", "knee", "foot"],
                "skeleton": [[1, 2], [2, 3], [3, 4]],
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 30, 30],
                "area": 900,
                "iscrowd": 0,
                "segmentation": [polygon],
                "keypoints": keypoints,
                "num_keypoints": 3,
            }
        ],
    }
    content = base64.b64encode(json.dumps(doc).encode()).decode()
    api.post(
        f"/v1/{ds['name']}:importAnnotations",
        {"files": [{"path": "annotations.json", "content": content}]},
    )
    page = signed_in_page(browser, mesh, api, f"/#/datasets/{ds['name'].split('/')[1]}")
    page.wait_for_selector(".gallery[data-ready]")
    overlay = page.locator(".tile[data-path='train/p.png'] svg.overlay")
    assert overlay.get_attribute("viewBox") == "0 0 80 60"
    shapes = overlay.evaluate(
        """svg => ({
            polygon: svg.querySelector('polygon').getAttribute('points'),
            rect: ['x', 'y', 'width', 'height'].map(a => +svg.querySelector('rect').getAttribute(a)),
            points: [...svg.querySelectorAll('circle.kp')].map(c => [+c.getAttribute('cx'),
                +c.getAttribute('cy'), c.getAttribute('fill') === 'white' ? 1 : 2]),
            bones: [...svg.querySelectorAll('line.bone')].map(l => ['x1', 'y1', 'x2', 'y2']
                .map(a => +l.getAttribute(a))),
        })"""
    )
    assert shapes["polygon"] == "10,10 40,12 30,40 12,30"
    assert shapes["rect"] == [10, 10, 30, 30]
    # three keypoints drawn (visible filled, occluded hollow), the absent one not
    assert shapes["points"] == [[20, 15, 2], [30, 25, 2], [25, 35, 1]]
    # the bones whose ends both exist: head-hip, hip-knee (knee-foot has no foot)
    assert shapes["bones"] == [[20, 15, 30, 25], [30, 25, 25, 35]]
    assert_accessible(page, "pose gallery")
    page.locator(".tile[data-path='train/p.png'] button").click()
    page.wait_for_selector("dialog[open] svg.overlay text")
    assert page.text_content("dialog[open] svg.overlay text") == "body"
    screenshot(page, "08b-pose-large")
    assert_offline(page)


# -- snapshots, compatibility, integrity, export ---------------------------------------------


def test_snapshots_diff_compatibility_integrity_export(browser, mesh, tmp_path):
    api = Api(mesh.url, user_name("sam"))
    ds = api.coco8("coco8 versions")
    name, dataset_id = ds["name"], ds["name"].split("/")[1]
    page = signed_in_page(browser, mesh, api, f"/#/datasets/{dataset_id}/snapshots")
    page.wait_for_selector("#snapshots-table")

    def snapshot(version: str) -> None:
        page.get_by_label("Version name").fill(version)
        page.get_by_role("button", name="Create snapshot").click()
        page.wait_for_selector(f"#snapshots-table th:text-is('{version}')")

    snapshot("v1")
    removed = sorted(i["path"] for i in api.get(f"/v1/{name}/images")["images"])[0]
    api.post(f"/v1/{name}/images:batchDelete", {"images": [removed]})
    snapshot("v2")
    snaps = {s["versionName"]: s["name"] for s in api.get(f"/v1/{name}/snapshots")["snapshots"]}
    page.get_by_label("From (base)").select_option(snaps["v1"])
    page.get_by_label("To (target)").select_option(snaps["v2"])
    page.get_by_role("button", name="Compare").click()
    page.wait_for_selector("#diff-result .card")
    diff = api.get(f"/v1/{snaps['v1']}:diff", target=snaps["v2"])
    text = page.inner_text("#diff-result")
    assert "Images removed: 1" in text and "Images added: 0" in text
    assert f"−{diff['removedAnnotationCount']} removed" in text
    page.locator("#diff-result summary", has_text="Images removed").click()
    assert removed in page.inner_text("#diff-result")
    assert_accessible(page, "snapshots")
    screenshot(page, "09-snapshots")

    # compatibility: per task, what the API says, and which models train it
    page.get_by_role("link", name="Compatibility").click()
    page.wait_for_selector(".compat-table")
    reports = {r["taskType"]: r for r in api.get(f"/v1/{name}:summarizeCompatibility")["reports"]}
    for task, report in reports.items():
        row = page.locator(f".compat-table tr[data-task='{task}']")
        assert row.get_attribute("data-compatible") == str(bool(report.get("compatible"))).lower()
        for error in report.get("errors", []):
            assert error in row.inner_text()
    detect = page.locator(".compat-table tr[data-task='TASK_TYPE_OBJECT_DETECTION']")
    assert detect.get_attribute("data-compatible") == "true"
    detect.locator("summary", has_text="ultralytics").click()
    assert "yolo11n" in detect.locator(".models").inner_text().split(", ")
    assert detect.get_by_role("link", name="Train Object detection on this dataset").is_visible()
    seg = page.locator(".compat-table tr[data-task='TASK_TYPE_INSTANCE_SEGMENTATION']")
    assert seg.get_attribute("data-compatible") == "false" and seg.locator(".error-text").count()
    assert_accessible(page, "compatibility")
    screenshot(page, "10-compatibility")

    # integrity, then a DICE export downloaded as a zip
    page.get_by_role("link", name="Integrity & export").click()
    page.get_by_role("button", name="Check integrity").click()
    page.wait_for_selector("#integrity-result .ok-text")
    checked = api.post(f"/v1/{name}:checkIntegrity", {})["checkedBlobCount"]
    assert f"All {checked} blobs are present" in page.inner_text("#integrity-result")
    with page.expect_download() as info:
        page.get_by_role("button", name="Export and download").click()
    target = tmp_path / "export.zip"
    info.value.save_as(target)
    page.wait_for_selector("#export-result .ok-text")
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        assert "meta.json" in [n.rsplit("/", 1)[-1] for n in names]
        images = [n for n in names if n.lower().endswith(".jpg")]
        assert len(images) == 7 and not any(removed in n for n in images)
    assert_accessible(page, "integrity and export")
    screenshot(page, "11-integrity-export")
    assert_offline(page)


# -- training ---------------------------------------------------------------------------------


def job_hash(name: str) -> str:
    _, framework, _, job = name.split("/")
    return f"#/jobs/{framework}/{job}"


def metrics_over_ndjson(api: Api, job: str) -> list[dict]:
    out = []
    with api.http.stream("GET", f"/v1/{job}:streamMetrics") as reply:
        for line in reply.iter_lines():
            if line.strip():
                item = json.loads(line)["result"]
                if item.get("metrics"):
                    out.append(item["metrics"])
    return out


def test_chat_fills_the_form_training_charts_stop_early_weights_predict(browser, mesh, tmp_path):
    root = shared_data("det-coco8")
    api = Api(mesh.url, user_name("tia"))
    tag = uuid.uuid4().hex[:6]
    ds = api.coco8(f"coco8-{tag}")
    caps = api.get("/v1/trainers/ultralytics:capabilities")
    page = signed_in_page(browser, mesh, api, "/#/train")
    page.wait_for_selector("#train-form [data-field=epochs]")

    # the form comes from GetCapabilities: every hyperparameter with its default and bounds
    page.locator("details.extras summary").click()
    for hp in caps["hyperparameters"]:
        key = f"spec.extra[{hp['name']}]" if hp.get("extra") else hp["name"]
        control = page.locator(f"[data-field='{key}'] :is(input, select)")
        if hp.get("type") == "bool":
            assert control.is_checked() == (hp.get("defaultValue") == "true"), hp
        else:
            assert control.input_value() == hp.get("defaultValue", ""), hp
        if hp.get("minValue"):
            assert control.get_attribute("min") == hp["minValue"]
        if hp.get("description"):
            assert hp["description"] in page.locator(f"[data-field='{key}'] .hint").inner_text()
    # models filtered by task
    for task in ("TASK_TYPE_IMAGE_CLASSIFICATION", "TASK_TYPE_POSE_ESTIMATION"):
        page.get_by_label("Task").select_option(task)
        shown = page.locator("select[name=model] option").evaluate_all("os => os.map(o => o.value)")
        want = [f"ultralytics/{m['name']}" for m in caps["models"] if task in m["taskTypes"]]
        assert shown == want
    # choosing the dataset moves the task to one its boxes train natively
    page.reload()
    page.wait_for_selector("#train-form [data-field=epochs]")
    page.get_by_label("Dataset").select_option(ds["name"])
    page.wait_for_function(
        "document.querySelector('select[name=task_type]').value === 'TASK_TYPE_OBJECT_DETECTION'"
    )
    page.wait_for_selector("#compat-line.ok-text")
    assert_accessible(page, "training form")
    screenshot(page, "12-train-form")

    # the chat box: a sentence fills the form; what it could not place is said
    sentence = f"train yolo11n on coco8-{tag} for 12 epochs quickly"
    page.get_by_label("Sentence").fill(sentence)
    page.get_by_role("button", name="Fill the form").click()
    page.wait_for_selector("#chat-result .callout")
    parsed = api.post("/v1/assistant:parseTrainingCommand", {"text": sentence})
    assert parsed["spec"]["dataset"] == ds["name"]
    assert page.get_by_label("Dataset").input_value() == ds["name"]
    assert page.get_by_label("Task").input_value() == "TASK_TYPE_OBJECT_DETECTION"
    assert page.get_by_label("Model").input_value() == "ultralytics/yolo11n"
    assert page.locator("[data-field=epochs] input").input_value() == "12"
    for word in parsed.get("unparsed", []):
        assert word in page.inner_text("#chat-unparsed")
    for note in parsed.get("notes", []):
        assert note in page.inner_text("#chat-result")
    page.wait_for_selector("#compat-line.ok-text")
    screenshot(page, "13-train-chat")
    korean = f"coco8-{tag} 데이터셋으로 yolo11n 학습시작 epochs 12"
    page.get_by_label("Sentence").fill(korean)
    page.get_by_role("button", name="Fill the form").click()
    page.wait_for_function("document.querySelector('#chat-result .callout') !== null")
    parsed = api.post("/v1/assistant:parseTrainingCommand", {"text": korean})
    assert parsed["spec"]["dataset"] == ds["name"] and parsed["spec"]["model"] == "yolo11n"
    page.wait_for_function("document.querySelector('[data-field=epochs] input').value === '12'")
    assert page.get_by_label("Model").input_value() == "ultralytics/yolo11n"

    # a bad value: the gateway's message shows next to that field, nothing starts
    page.locator("[data-field='batch_size'] input").fill("4")
    page.locator("[data-field='image_size'] input").fill("8")
    page.get_by_role("button", name="Start training").click()
    error = page.locator("[data-field='image_size'] .field-error")
    error.wait_for()
    sent = api.http.post(
        "/v1/trainers/ultralytics/jobs",
        json={
            "requestId": str(uuid.uuid4()),
            "spec": {
                "dataset": ds["name"],
                "taskType": "TASK_TYPE_OBJECT_DETECTION",
                "model": "yolo11n",
                "imageSize": 8,
            },
        },
    )
    assert sent.status_code == 400
    violation = sent.json()["details"][0]["fieldViolations"][0]
    assert violation["field"] == "spec.image_size"
    assert error.inner_text() == violation["description"]
    control = page.locator("[data-field='image_size'] input")
    assert control.get_attribute("aria-invalid") == "true"
    assert page.evaluate(
        "document.activeElement === document.querySelector(\"[data-field='image_size'] input\")"
    )
    assert api.get("/v1/trainers/-/jobs").get("jobs", []) == []
    screenshot(page, "14-train-error")

    # start; the chart receives epochs live; stop early after the first
    control.fill("64")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_selector("#job-state")
    job_name = "trainers/ultralytics/jobs/" + page.evaluate("location.hash").split("/")[-1]
    page.wait_for_selector("#charts circle.pt[data-epoch='1']", timeout=240_000)
    assert page.locator("#job-state [data-state]").get_attribute("data-state") == "running"
    assert_accessible(page, "job running")
    screenshot(page, "15-job-running")
    page.get_by_role("button", name="Stop early").click()
    page.wait_for_selector("#job-state [data-state=succeeded]", timeout=240_000)
    job = api.get(f"/v1/{job_name}")["job"]
    epochs = metrics_over_ndjson(api, job_name)
    n = job["currentEpoch"]
    assert 1 <= n < 12 and [e["epoch"] for e in epochs] == list(range(1, n + 1))
    page.wait_for_function(f"document.querySelector('#charts').dataset.epochs === '{n}'")
    # every epoch is a point on the loss chart, at its value; the best epoch is marked
    points = page.locator("#chart-losses g.series[data-series='train/loss'] circle").evaluate_all(
        "cs => cs.map(c => [+c.dataset.epoch, +c.dataset.value])"
    )
    assert [p[0] for p in points] == list(range(1, n + 1))
    for (epoch, value), sent_epoch in zip(points, epochs, strict=True):
        assert epoch == sent_epoch["epoch"]
        assert value == pytest.approx(sent_epoch["values"]["train/loss"])
    assert page.locator("#chart-losses .best-marker").get_attribute("data-epoch") == str(
        job["bestEpoch"]
    )
    assert page.locator("#chart-box-metrics g.series[data-series='val/map50'] circle").count() == n
    assert page.locator("#epochs-table tbody tr").count() == n
    assert "SUCCEEDED" in page.inner_text("#log")
    facts = page.inner_text(".facts-grid")  # where it ran: the device and the replica
    assert job["replica"] and f"replica {job['replica']}" in facts, facts
    assert_accessible(page, "job finished")
    screenshot(page, "16-job-finished")

    # best.pt downloads with the checkpoint's bytes
    best = next(c for c in job["checkpoints"] if c["filename"] == "best.pt")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download best.pt").click()
    target = tmp_path / "best.pt"
    info.value.save_as(target)
    data = target.read_bytes()
    assert data[:2] == b"PK" and len(data) == int(best["sizeBytes"])

    # predict: the boxes the trainer found are drawn over the uploaded image
    image = sorted(root.glob("images/val/*.jpg"))[0]
    page.set_input_files("#predict-file", str(image))
    page.get_by_label("Minimum score").fill("0.0001")
    page.get_by_role("button", name="Predict").click()
    page.wait_for_selector("#predict-result .frame img")
    reply = api.post(
        f"/v1/{job_name}:predict",
        {"image": base64.b64encode(image.read_bytes()).decode(), "confidenceThreshold": 0.0001},
    )
    dets = reply.get("detections", [])
    assert dets, "an untrained model still proposes boxes at 1e-4"
    rects = page.locator("#predict-result svg.overlay rect").evaluate_all(
        "rs => rs.map(r => [+r.getAttribute('x'), +r.getAttribute('y'),"
        " +r.getAttribute('width'), +r.getAttribute('height')])"
    )
    assert len(rects) == len([d for d in dets if d.get("box", {}).get("width")])
    want = sorted(
        [d["box"].get(k, 0) for k in ("x", "y", "width", "height")]
        for d in dets
        if d.get("box", {}).get("width")
    )
    for got, exp in zip(sorted(rects), want, strict=True):
        assert got == pytest.approx(exp, abs=0.01)
    assert page.get_attribute("#predict-result svg.overlay", "viewBox") == (
        f"0 0 {reply['imageWidth']} {reply['imageHeight']}"
    )
    assert_every_image_has_alt(page)
    assert_accessible(page, "predict")
    screenshot(page, "17-predict")

    # two more jobs: the first stops at its deadline (FAILED, checkpoints kept), the second
    # waits in the queue meanwhile (position shown) and is cancelled from its page
    jobs = []
    for deadline in (15, 0):  # the first runs 15 s: long enough to see the second wait
        spec = {
            "dataset": ds["name"],
            "taskType": "TASK_TYPE_OBJECT_DETECTION",
            "model": "yolo11n",
            "epochs": 200,
            "imageSize": 32,
            "batchSize": 4,
            "maxDurationSeconds": deadline,
        }
        reply = api.post(
            "/v1/trainers/ultralytics/jobs", {"requestId": str(uuid.uuid4()), "spec": spec}
        )
        jobs.append(reply["job"]["name"])
    queued = api.get(f"/v1/{jobs[1]}")["job"]
    assert queued["state"] == "JOB_STATE_QUEUED" and queued["queuePosition"] == 1

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    waiting = page.locator(f"#jobs-table tr[data-name='{jobs[1]}']")
    waiting.wait_for()
    assert waiting.locator("[data-state]").get_attribute("data-state") == "queued"
    assert "#1" in waiting.inner_text()
    screenshot(page, "18-jobs")
    waiting.get_by_role("link").click()
    page.wait_for_selector("#job-state [data-state=queued]")
    assert "position 1" in page.inner_text("main")
    page.get_by_role("button", name="Cancel").click()
    page.locator("dialog[open]").get_by_role("button", name="Cancel the job").click()
    page.wait_for_selector("#job-state [data-state=cancelled]")
    assert api.get(f"/v1/{jobs[1]}")["job"]["state"] == "JOB_STATE_CANCELLED"
    assert page.get_by_role("button", name="Resume").is_disabled()

    # the deadline job: FAILED with its reason and weights; Resume continues it
    page.goto(f"/{job_hash(jobs[0])}")
    page.wait_for_selector("#job-state [data-state=failed]", timeout=240_000)
    failed = api.get(f"/v1/{jobs[0]}")["job"]
    assert failed["error"] in page.inner_text("main")
    page.wait_for_selector("#checkpoints [data-file='last.pt']")
    page.get_by_role("button", name="Resume").click()
    page.wait_for_selector("dt:text-is('Resumed')")  # the reply: queued again, resumed once
    assert api.get(f"/v1/{jobs[0]}")["job"]["resumeCount"] == 1
    api.http.post(f"/v1/{jobs[0]}:cancel", json={})  # (it may have hit its deadline again)
    page.wait_for_selector(
        "#job-state :is([data-state=cancelled], [data-state=failed])", timeout=60_000
    )

    # the jobs list shows it, finished, with its progress
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    row = page.locator(f"#jobs-table tr[data-name='{job_name}']")
    row.wait_for()
    assert row.locator("[data-state]").get_attribute("data-state") == "succeeded"
    assert f"{n}/12" in row.inner_text()
    assert_accessible(page, "jobs")
    assert_offline(page)
