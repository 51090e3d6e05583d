"""What every servicer shares: settings, catalog, object store and the token issuer."""

from __future__ import annotations

from dataclasses import dataclass

from dataset_svc.cache import CachingVerifier
from dataset_svc.catalog import Catalog, open_catalog
from dataset_svc.settings import ServiceSettings
from dataset_svc.settings import load as load_settings
from visionmesh import auth
from visionmesh.store import ObjectStore, open_store


@dataclass
class App:
    settings: ServiceSettings
    catalog: Catalog
    store: ObjectStore
    issuer: auth.TokenIssuer
    verifier: auth.TokenVerifier | CachingVerifier

    @classmethod
    def from_env(cls) -> App:
        settings = load_settings()
        issuer = auth.load_issuer(settings.base)
        verifier = CachingVerifier(auth.load_verifier(settings.base))
        return cls(
            settings=settings,
            catalog=open_catalog(settings.base.database_url),
            store=open_store(settings.base.store_url),
            issuer=issuer,
            verifier=verifier,
        )

    def close(self) -> None:
        self.catalog.close()
        self.store.close()
