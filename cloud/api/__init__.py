"""The HTTP API (FastAPI): registry, series, ingest status and health.  ``main.create_app`` builds it."""
