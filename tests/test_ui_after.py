"""After training, in headless Chromium: the job page's Evaluation and Export sections and the
training form's "Initialize from", against the real gateway, dataset_svc and ultralytics
trainer (the stack of tests/test_ui.py; one short job: 64 px, 2 epochs, det-coco8).

What the page shows is checked against the REST API: the per-class table and the confusion
matrix cell by cell against GetEvaluation, the pictures decode in the browser, the ONNX
exported from the page downloads with the bytes of the REST download, and the form's
initFrom reaches the started job's spec. axe-core runs on the new sections.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests._browser import assert_accessible, screenshot
from tests.test_ui import (  # noqa: F401  (module fixtures of the shared stack)
    Api,
    assert_offline,
    browser,
    dataset_server,
    mesh,
    signed_in_page,
    user_name,
)

pytestmark = pytest.mark.timeout(600)

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


def wait_job(api: Api, name: str, timeout: float = 400) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/{name}")["job"]
        if job["state"] in TERMINAL:
            return job
        time.sleep(1)
    raise AssertionError(f"{name} did not end in {timeout} s: {job}")


def test_evaluation_export_and_init_from(browser, mesh, tmp_path):  # noqa: F811
    api = Api(mesh.url, user_name("eva"))
    tag = uuid.uuid4().hex[:6]
    ds = api.coco8(f"coco8-{tag}")
    spec = {
        "dataset": ds["name"],
        "taskType": "TASK_TYPE_OBJECT_DETECTION",
        "model": "yolo11n",
        "epochs": 2,
        "imageSize": 64,
        "batchSize": 4,
    }
    started = api.post(
        "/v1/trainers/ultralytics/jobs", {"requestId": str(uuid.uuid4()), "spec": spec}
    )
    job_name = started["job"]["name"]
    job = wait_job(api, job_name)
    assert job["state"] == "JOB_STATE_SUCCEEDED", job
    evaluation = api.get(f"/v1/{job_name}/evaluation")["evaluation"]
    classes = evaluation["classes"]
    assert classes, evaluation.keys()

    page = signed_in_page(browser, mesh, api, f"/#/jobs/ultralytics/{job_name.split('/')[-1]}")
    page.wait_for_selector("#job-state [data-state=succeeded]")
    page.wait_for_selector("#eval-classes tbody tr", timeout=30_000)

    # overall metrics, as GetEvaluation has them
    shown = page.locator("#evaluation-metrics dd").evaluate_all(
        "ds => ds.map(d => [d.dataset.key, +d.dataset.value, d.textContent])"
    )
    assert sorted(k for k, _, _ in shown) == sorted(evaluation["metrics"])
    for key, value, _ in shown:
        assert value == pytest.approx(evaluation["metrics"][key])

    # the per-class table: one row per class, the columns the values present, plus instances
    keys = page.locator("#eval-classes thead th[data-key]").evaluate_all(
        "ths => ths.map(t => t.dataset.key)"
    )
    present = {k for c in classes for k in c.get("values", {})}
    assert set(keys) == present and keys[:2] == ["ap50", "ap50_95"]

    def class_rows() -> list[dict]:
        return page.locator("#eval-classes tbody tr").evaluate_all(
            """trs => trs.map(tr => ({name: tr.dataset.className, id: +tr.dataset.classId,
                cells: Object.fromEntries([...tr.querySelectorAll('td')].map(td =>
                    [td.dataset.key, td.dataset.value === undefined ? null : +td.dataset.value])),
                texts: [...tr.querySelectorAll('td')].map(td => td.textContent)}))"""
        )

    def check_rows(rows: list[dict], want: list[dict]) -> None:
        assert [r["name"] for r in rows] == [c.get("categoryName", "") for c in want]
        for row, cls in zip(rows, want, strict=True):
            assert row["id"] == int(cls.get("categoryId", 0))
            assert row["cells"]["instances"] == int(cls.get("instanceCount", 0))
            for key in keys:
                value = cls.get("values", {}).get(key)
                if value is None:
                    assert row["cells"][key] is None
                else:
                    assert row["cells"][key] == pytest.approx(value)
            assert row["texts"][-1] == str(int(cls.get("instanceCount", 0)))

    # COCO's 80 names on 4 val images: classes without an instance and only zeros are left
    # out until asked for
    seen = [
        c
        for c in classes
        if int(c.get("instanceCount", 0)) or any(v for v in c.get("values", {}).values())
    ]
    assert 0 < len(seen) < len(classes)
    assert sum(int(c.get("instanceCount", 0)) for c in seen) > 0
    check_rows(class_rows(), seen)
    page.get_by_label(f"Show all {len(classes)} classes").check()
    check_rows(class_rows(), classes)
    page.get_by_label(f"Show all {len(classes)} classes").uncheck()
    check_rows(class_rows(), seen)

    # the confusion matrix: rows true, columns predicted, every cell the API's count
    # (a class neither true nor predicted anywhere, an all-zero row and column, is left out)
    cm = evaluation["confusionMatrix"]
    labels = cm["labels"]
    full = [[float(c) for c in (r.get("counts") or [0] * len(labels))] for r in cm["rows"]]
    assert len(full) == len(labels) and all(len(r) == len(labels) for r in full)
    keep = [i for i in range(len(labels)) if sum(full[i]) or sum(r[i] for r in full)]
    assert labels[-1] == "background" and len(labels) - 1 in keep
    header = page.locator("#confusion thead th").evaluate_all("ths => ths.map(t => t.textContent)")
    assert header == [labels[i] for i in keep]
    row_heads = page.locator("#confusion tbody th").evaluate_all(
        "ths => ths.map(t => t.textContent)"
    )
    assert row_heads == [labels[i] for i in keep]
    cells = page.locator("#confusion tbody tr").evaluate_all(
        "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => +td.dataset.count))"
    )
    assert cells == [[full[i][j] for j in keep] for i in keep]
    assert sum(map(sum, cells)) == sum(map(sum, full)) > 0
    assert f"{len(labels) - len(keep)} of {len(labels)} classes" in page.inner_text(
        "#confusion-note"
    )
    # the heat: the largest count is the darkest cell
    biggest = max((v, i, j) for i, r in enumerate(cells) for j, v in enumerate(r))
    dark = page.locator(
        f"#confusion tbody tr[data-row='{keep[biggest[1]]}'] td[data-col='{keep[biggest[2]]}']"
    ).evaluate("td => getComputedStyle(td).backgroundColor")
    assert dark == "rgb(8, 48, 107)"

    # the pictures decode, each with its alt text
    pictures = page.locator("#evaluation-pictures img").evaluate_all(
        "is => is.map(i => [i.dataset.file, i.naturalWidth, i.alt])"
    )
    assert sorted(p[0] for p in pictures) == sorted(p["filename"] for p in evaluation["pictures"])
    for filename, width, alt in pictures:
        assert width > 0 and alt, filename
    assert_accessible(page, "job evaluation")
    screenshot(page, "19-job-evaluation")

    # export ONNX from the page: the pill follows it to SUCCEEDED; the download is the file
    pill = page.locator("#export-onnx-state")
    assert pill.get_attribute("data-state") == "none"
    page.get_by_role("button", name="Export ONNX").click()
    page.wait_for_selector(
        "#export-onnx-state:is([data-state=running], [data-state=succeeded])", timeout=30_000
    )
    page.wait_for_selector(
        "#export-onnx-state:is([data-state=succeeded], [data-state=failed])", timeout=300_000
    )
    export = api.get(f"/v1/{job_name}/exports/onnx")["export"]
    assert export["state"] == "EXPORT_STATE_SUCCEEDED", export
    assert pill.get_attribute("data-state") == "succeeded"
    file = export["file"]
    with page.expect_download() as info:
        page.locator("#export-onnx-out button").click()
    target = tmp_path / "model.onnx"
    info.value.save_as(target)
    rest = api.http.get(f"/v1/{file['name']}:download")
    assert rest.status_code == 200
    assert target.read_bytes() == rest.content and len(rest.content) == int(file["sizeBytes"])
    assert page.locator("#export-torchscript-state").get_attribute("data-state") == "none"
    assert_accessible(page, "job export")
    screenshot(page, "20-job-export")

    # the training form: "Initialize from" lists the finished job; its choice reaches the spec
    page.goto("/#/train")
    page.wait_for_selector("#train-form [data-field=epochs]")
    page.get_by_label("Dataset").select_option(ds["name"])
    page.wait_for_function(
        "document.querySelector('select[name=task_type]').value === 'TASK_TYPE_OBJECT_DETECTION'"
    )
    page.get_by_label("Model").select_option("ultralytics/yolo11n")
    page.wait_for_selector(f"#init-from option[value='{job_name}']", state="attached")
    assert "vmesh pretrained upload" in page.inner_text("[data-field=init_from] .hint")
    page.get_by_label("Initialize from").select_option(job_name)
    page.locator("[data-field=epochs] input").fill("1")
    page.locator("[data-field=image_size] input").fill("64")
    page.locator("[data-field=batch_size] input").fill("4")
    assert_accessible(page, "training form with initialize from")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_selector("#job-state")
    second = "trainers/ultralytics/jobs/" + page.evaluate("location.hash").split("/")[-1]
    assert second != job_name
    assert api.get(f"/v1/{second}")["job"]["spec"]["initFrom"] == job_name
    api.http.post(f"/v1/{second}:cancel", json={})
    assert_offline(page)
