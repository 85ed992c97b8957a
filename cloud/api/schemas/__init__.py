"""Request and answer models of the API, one module per area (``Base``/``Create``/``Update``/``Public``)."""
