"""Languages of the web console: gettext catalogs (Babel), the language choice, locale-aware formatting.

Catalogs: ``controller/ui/locale/<lang>/LC_MESSAGES/messages.po`` (hand-translated) and the compiled
``messages.mo`` committed next to them (no build step at install); ``tests/unit/test_ui_catalogs.py`` fails
when a ``.mo`` is out of date with its ``.po`` or the ``.po`` files with the templates and Python sources.
Choice: the ``zs_lang`` cookie, else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

import gettext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from babel import Locale
from babel.dates import format_datetime
from babel.numbers import format_decimal, format_percent

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES: dict[str, str] = {"en": "English", "zh_CN": "简体中文", "zh_TW": "繁體中文"}
DEFAULT = "en"
COOKIE = "zs_lang"


def N_(text: str) -> str:
    """Mark a string for extraction; it is translated where it is shown."""
    return text


def translations(lang: str) -> gettext.NullTranslations:
    return gettext.translation("messages", localedir=str(LOCALE_DIR), languages=[lang])


def choose(request: web.Request) -> str:
    lang = request.cookies.get(COOKIE, "")
    if lang in LANGUAGES:
        return lang
    wanted = []
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip()
        if tag and tag != "*":
            wanted.append(tag.replace("-", "_"))
    got = Locale.negotiate(wanted, ["en", "zh_CN", "zh_TW", "zh_Hans", "zh_Hant", "zh_HK", "zh"], sep="_")
    if got is None:
        return DEFAULT
    text = str(got)
    if text in ("zh_TW", "zh_Hant", "zh_HK") or text.startswith("zh_Hant"):
        return "zh_TW"
    if text.startswith("zh"):
        return "zh_CN"
    return DEFAULT


class Formatter:
    """Numbers, sizes, percentages and dates for one locale (Babel)."""

    UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")

    def __init__(self, lang: str) -> None:
        self.locale = Locale.parse(lang)

    def number(self, value: Any) -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return str(value)
        return format_decimal(value, locale=self.locale)

    def size(self, value: Any) -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return str(value)
        n = float(value)
        unit = 0
        while abs(n) >= 1024 and unit < len(self.UNITS) - 1:
            n /= 1024
            unit += 1
        return f"{format_decimal(n, format='#,##0.#', locale=self.locale)} {self.UNITS[unit]}"

    def percent(self, used: float, total: float) -> str:
        if not total:
            return format_percent(0, locale=self.locale)
        return format_percent(used / total, format="#,##0.#%", locale=self.locale)

    def date(self, value: Any) -> str:
        if not value:
            return ""
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return format_datetime(dt, "medium", tzinfo=UTC, locale=self.locale) + " UTC"
