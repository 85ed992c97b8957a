"""Web pages served by the cloud service: the village service-point terminal, the ops console and the
credit officer console (issue 7).  Server-rendered (Jinja2), Chinese by default and English (gettext
catalogues through Babel), charts drawn as SVG on the server.  :func:`cloud.web.app.mount` wires them."""
