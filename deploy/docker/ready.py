"""Init container of the visionmesh pods: wait for the catalog database and the object store.

``python deploy/docker/ready.py [--timeout SECONDS]`` reads the same variables the services
read (``VISIONMESH_DATABASE_URL``, ``VISIONMESH_STORE_URL``, the ``AWS_*`` ones and libpq's
``PGPASSWORD``), then

- waits until the database answers ``SELECT 1`` (SQLite is skipped: nothing to wait for);
- for an ``s3://bucket/prefix`` store, waits until the endpoint answers and creates the bucket
  when it does not exist (a ``file://`` store is skipped).

It exits 0 once both are ready and 1 with the last error after ``--timeout`` (default 300 s),
so a pod starts its server only when the catalog and the bucket are there: a trainer that
started without its bucket would never recover its jobs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from urllib.parse import urlparse

from visionmesh import config
from visionmesh.store import open_store


def database_ready(url: str) -> None:
    if url.startswith("sqlite"):
        return
    import sqlalchemy as sa

    engine = sa.create_engine(url, pool_pre_ping=False, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def bucket_ready(url: str) -> None:
    if urlparse(url).scheme != "s3":
        return
    from botocore.exceptions import ClientError

    store = open_store(url)
    try:
        try:
            store.client.head_bucket(Bucket=store.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
        try:
            store.client.create_bucket(Bucket=store.bucket)
            print(f"created bucket {store.bucket}", flush=True)
        except ClientError as exc:  # another pod made it first
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
    finally:
        store.close()


def wait(label: str, check: Callable[[], None], deadline: float) -> bool:
    last = ""
    while True:
        try:
            check()
            print(f"{label}: ready", flush=True)
            return True
        except Exception as exc:  # any failure means "not yet": retried until the deadline
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if message != last:
                print(f"{label}: not ready ({message})", flush=True)
                last = message
        if time.monotonic() >= deadline:
            print(f"{label}: gave up waiting", file=sys.stderr, flush=True)
            return False
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait in all")
    args = parser.parse_args(argv)
    settings = config.load()
    deadline = time.monotonic() + args.timeout
    ok = wait("database", lambda: database_ready(settings.database_url), deadline)
    ok = ok and wait("object store", lambda: bucket_ready(settings.store_url), deadline)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
