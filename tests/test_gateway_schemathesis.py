"""schemathesis against the gateway's own /openapi.json, signed in, on the dataset and job
routes: no 5xx, no response outside its documented schema or content type.

A real stack (dataset_svc, the timm trainer, the gateway) with one dataset and one image
seeded so that generated requests reach real resources, not only 404s. The run is bounded
(``--max-time``, examples per operation) to about a minute.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._dataset import image_bytes, start_dataset_server
from tests._gateway import multipart_files, sign_in, start_gateway
from tests._servers import ROOT
from tests._trainers import start_trainer

pytestmark = pytest.mark.timeout(600)
MAX_SECONDS = 60


def test_schemathesis_finds_no_server_errors_or_schema_breaks(tmp_path_factory):
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        st = Path(shutil.which("st") or "st")
    dataset, cleanup = start_dataset_server("sqlite+local", tmp_path_factory.mktemp("st-home"))
    trainer = gateway = None
    try:
        trainer = start_trainer("timm", dataset, guard_dir=tmp_path_factory.mktemp("guard"))
        gateway = start_gateway(dataset.addr, {"timm": trainer.addr})
        with gateway.client() as http:
            token = sign_in(http, "fuzzer")
        with gateway.client(token) as http:
            name = http.post("/v1/datasets", json={"displayName": "fuzz"}).json()["dataset"]["name"]
            upload = http.post(
                f"/v1/{name}/images:upload",
                files=multipart_files([("train/a.png", image_bytes(16, 16))]),
            ).json()
            image = upload["images"][0]["name"]
            snapshot = http.post(f"/v1/{name}/snapshots", json={}).json()["snapshot"]["name"]
        config = tmp_path_factory.mktemp("st") / "schemathesis.toml"
        config.write_text(
            "[parameters]\n"
            f'"path.dataset_id" = "{name.split("/")[1]}"\n'
            f'"path.image_id" = "{image.split("/")[-1]}"\n'
            f'"path.snapshot_id" = "{snapshot.split("/")[-1]}"\n'
            '"path.trainer_id" = "timm"\n'
        )
        result = subprocess.run(
            [
                str(st),
                "--config-file",
                str(config),
                "run",
                f"{gateway.url}/openapi.json",
                "-H",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--include-path-regex",
                "^/v1/(datasets|trainers)",
                "--exclude-path-regex",
                ":predict$",  # images as base64 JSON: fuzzing them only costs time
                "--max-examples",
                "15",
                "--max-time",
                str(MAX_SECONDS),
                "--workers",
                "2",
                "--no-shrink",
                "--seed",
                "7",
                "--request-timeout",
                "30",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=MAX_SECONDS + 240,
        )
        out = result.stdout + result.stderr
        summary = out[out.rfind("SUMMARY") :]
        assert "Tested:" in summary, out[-4000:]
        failures = re.findall(r"❌ (ST\d+ [^:\n]+): (\d+)", summary)
        details = out[out.find("FAILURES") : out.find("WARNINGS")]
        assert failures == [], details[:8000]
        assert gateway.proc.poll() is None, gateway.log()[-3000:]
    finally:
        if gateway is not None:
            gateway.stop()
        if trainer is not None and trainer.process.proc.poll() is None:
            trainer.stop()
        cleanup()
