"""The dataset catalog: SQLAlchemy models, engine/sessions and Alembic migrations."""

from dataset_svc.catalog.db import Catalog, lock_blob_references, open_catalog

__all__ = ["Catalog", "lock_blob_references", "open_catalog"]
