"""Rendering pages: one Jinja2 environment per language, each with its gettext catalogue installed.

Jinja2's i18n extension takes its ``gettext`` from the environment; an environment per language (two)
keeps that thread-safe without passing callables through every template context.  Autoescaping is on
for HTML and SVG.  :func:`render` answers a page in the request's language (:mod:`cloud.web.i18n`) and,
when the request switched language with ``?lang=``, remembers the choice in the ``lang`` cookie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from cloud.web import i18n, words

TEMPLATE_DIR = Path(__file__).parent / "templates"
#: a year: the language chosen at a terminal stays chosen
LANG_COOKIE_AGE = 365 * 86400


@cache
def environment(language: str) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html", "svg"]),
                      extensions=["jinja2.ext.i18n"], undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    catalogue = i18n.translations(language)

    def say(table: str, code: str | None) -> str:
        """The words for a code of one of :mod:`cloud.web.words`' tables, in this language."""
        return catalogue.gettext(words.word(getattr(words, table), code)) if code else ""

    env.globals.update(fmt=i18n.Formats(language), language=language, languages=list(i18n.LANGUAGES), say=say)
    env.filters["unit"] = lambda code: words.UNITS.get(code, code) if code else ""
    return env


def language_of(request: Request) -> str:
    return i18n.negotiate(request.query_params.get("lang"), request.cookies.get(i18n.LANG_COOKIE),
                          request.headers.get("accept-language"))


def switch_url(request: Request, language: str) -> str:
    """The current page in ``language`` (the same query, ``lang`` replaced)."""
    query = {k: v for k, v in request.query_params.items() if k != "lang"} | {"lang": language}
    return f"{request.url.path}?{urlencode(query)}"


def translator(request: Request) -> tuple[Callable[[str], str], Callable[[str, str, int], str]]:
    """The request's language's ``gettext`` and ``ngettext`` (for words made in Python, such as form errors)."""
    catalogue = i18n.translations(language_of(request))
    return catalogue.gettext, catalogue.ngettext


def render(request: Request, template: str, context: Mapping[str, Any] | None = None, *,
           status_code: int = 200) -> HTMLResponse:
    language = language_of(request)
    page = environment(language).get_template(template)
    values = {"request": request, "now": datetime.now(UTC), "switch_url": lambda lang: switch_url(request, lang),
              "path": request.url.path} | dict(context or {})
    response = HTMLResponse(page.render(values), status_code=status_code)
    chosen = i18n.supported(request.query_params.get("lang"))
    if chosen is not None and chosen != request.cookies.get(i18n.LANG_COOKIE):
        response.set_cookie(i18n.LANG_COOKIE, chosen, max_age=LANG_COOKIE_AGE, path="/", samesite="lax")
    # pages show one person's data: never kept by shared caches, and never framed by another site
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                                   "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
    return response
