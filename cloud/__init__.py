"""The cloud side: ingest workers, the store, the registry, the API and web pages (to come)."""
