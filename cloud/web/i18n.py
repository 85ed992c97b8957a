"""Languages of the pages: which one a request gets, its gettext catalogue, and Babel's formatting.

Chinese (zh-CN) is the default; English is the other.  A request's language is, in this order: the
``lang`` query parameter (a switch link; the answer remembers it in the ``lang`` cookie), the ``lang``
cookie, the first supported language of ``Accept-Language``, else zh-CN.

The catalogues are the ``.po`` files under ``cloud/web/locale`` (msgids are the English words).  They
are compiled in memory when first needed (Babel reads the ``.po`` and writes the ``.mo`` bytes that
:class:`gettext.GNUTranslations` loads), so only the ``.po`` files are kept in the repository and no
build step can be forgotten.  ``pybabel extract -F cloud/web/babel.cfg`` refreshes the template
(README "Web pages" says how).

Dates and times are shown in :data:`TIME_ZONE` (the service points are in China) until tenants carry a
time zone of their own; numbers and money (CNY) follow the language's conventions.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from babel import Locale, dates, numbers
from babel.messages import mofile, pofile

LOCALE_DIR = Path(__file__).parent / "locale"
#: supported languages: the tag pages use (``<html lang>``, the ``lang`` cookie) -> Babel's locale name
LANGUAGES: dict[str, str] = {"zh-CN": "zh_CN", "en": "en"}
DEFAULT_LANGUAGE = "zh-CN"
LANG_COOKIE = "lang"
TIME_ZONE = ZoneInfo("Asia/Shanghai")
CURRENCY = "CNY"

Language = Literal["zh-CN", "en"]


def supported(tag: str | None) -> str | None:
    """The supported language a tag names (``zh``, ``zh-Hans-CN``, ``en-GB`` ...), or None."""
    if not tag:
        return None
    tag = tag.strip().replace("_", "-").lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def from_accept_language(header: str | None) -> str | None:
    """The first supported language of an ``Accept-Language`` header, by quality then order."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag))
    for negative_quality, _, tag in sorted(ranked):
        language = supported(tag)
        if language is not None and negative_quality < 0:
            return language
    return None


def negotiate(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    return supported(query) or supported(cookie) or from_accept_language(accept_language) or DEFAULT_LANGUAGE


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalogue of ``language`` (English words are the msgids: an empty catalogue is English)."""
    path = LOCALE_DIR / LANGUAGES[language] / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = pofile.read_po(po, locale=LANGUAGES[language])
    buffer = io.BytesIO()
    mofile.write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@dataclass(frozen=True)
class Formats:
    """Babel's formatting in one language and the display time zone (template filters use these)."""

    language: str

    @property
    def locale(self) -> Locale:
        return Locale.parse(LANGUAGES[self.language])

    def datetime(self, value: datetime | None, format: str = "medium") -> str:
        if value is None:
            return "—"
        return dates.format_datetime(value, format, tzinfo=TIME_ZONE, locale=self.locale)

    def date(self, value: date | datetime | None, format: str = "medium") -> str:
        if value is None:
            return "—"
        if isinstance(value, datetime):
            value = value.astimezone(TIME_ZONE).date()
        return dates.format_date(value, format, locale=self.locale)

    def short_time(self, value: datetime) -> str:
        """Month, day and hour for chart axes ("6月3日 14时" / "Jun 3, 14h")."""
        return dates.format_skeleton("MMMdH", value, tzinfo=TIME_ZONE, locale=self.locale)

    def day(self, value: datetime) -> str:
        """Month and day for chart axes."""
        return dates.format_skeleton("MMMd", value, tzinfo=TIME_ZONE, locale=self.locale)

    def since(self, value: datetime, now: datetime) -> str:
        """A moment in plain words: "today 08:00", the weekday within the last week, else the date."""
        local, today = value.astimezone(TIME_ZONE), now.astimezone(TIME_ZONE).date()
        if local.date() == today:
            return dates.format_time(local, "short", locale=self.locale)
        if today - local.date() < timedelta(days=7):
            return dates.format_date(local.date(), "EEEE", locale=self.locale)
        return dates.format_date(local.date(), "medium", locale=self.locale)

    def ago(self, value: datetime | None, now: datetime) -> str:
        """How long ago, in words ("3 hours" / "3小时")."""
        if value is None:
            return "—"
        return dates.format_timedelta(now - value, threshold=1.5, locale=self.locale)

    def number(self, value: float | int | None, digits: int = 1) -> str:
        if value is None:
            return "—"
        return numbers.format_decimal(round(value, digits), format=f"#,##0.{'0' * digits}" if digits else "#,##0",
                                      locale=self.locale)

    def money(self, amount: float | int | None, currency: str = CURRENCY) -> str:
        if amount is None:
            return "—"
        return numbers.format_currency(amount, currency, locale=self.locale)

    def percent(self, value: float | None) -> str:
        if value is None:
            return "—"
        return numbers.format_percent(value, locale=self.locale)
