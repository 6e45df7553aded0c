"""The console's gettext catalogs: every string translated (no empty or fuzzy entry), placeholders kept, the
catalogs in step with the templates and Python sources (a fresh Babel extraction), and the committed .mo files
in step with their .po files."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from controller.ui import i18n

UI = Path(i18n.__file__).parent
LOCALE = UI / "locale"
PLACEHOLDER = re.compile(r"%\([A-Za-z_]+\)[sd]|\{[A-Za-z_0-9]*\}")
#: Simplified-Chinese word forms that must not appear in the Taiwan catalog (vocabulary, not characters)
ZH_CN_ONLY = ("内存", "镜像", "网络", "云主机", "物理机", "登录", "默认", "集群", "用户", "信息")


def extracted() -> set[str]:
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    ids = set()
    for _f, _l, msg, _c, _ctx in extract_from_dir(str(UI), method_map, options, keywords=keywords):
        ids.add(msg if isinstance(msg, str) else msg[0])
    return ids


def catalog(lang: str):  # type: ignore[no-untyped-def]
    with open(LOCALE / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def test_template_is_up_to_date() -> None:
    with open(LOCALE / "messages.pot", "rb") as f:
        pot = {m.id for m in read_po(f) if m.id}
    fresh = extracted()
    assert fresh - pot == set(), "strings missing from messages.pot: run pybabel extract (locale/README.md)"
    assert pot - fresh == set(), "strings no longer used are still in messages.pot: run pybabel extract"


@pytest.mark.parametrize("lang", ["en", "zh_CN", "zh_TW"])
def test_catalog_complete_and_consistent(lang: str) -> None:
    cat = catalog(lang)
    fresh = extracted()
    ids = {m.id for m in cat if m.id}
    assert fresh - ids == set(), f"{lang}: untranslated (missing) strings; run pybabel update"
    assert ids - fresh == set(), f"{lang}: obsolete strings; run pybabel update"
    for m in cat:
        if not m.id:
            continue
        assert m.string, f"{lang}: {m.id!r} is not translated"
        assert not m.fuzzy, f"{lang}: {m.id!r} is fuzzy"
        assert sorted(PLACEHOLDER.findall(m.id)) == sorted(PLACEHOLDER.findall(m.string)), \
            f"{lang}: placeholders of {m.id!r} differ in {m.string!r}"
    assert not [m for m in cat.obsolete.values()], f"{lang}: obsolete (#~) entries left"


@pytest.mark.parametrize("lang", ["en", "zh_CN", "zh_TW"])
def test_compiled_catalog_matches_po(lang: str) -> None:
    po = {m.id: m.string for m in catalog(lang) if m.id}
    with open(LOCALE / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        mo = {m.id: m.string for m in read_mo(io.BytesIO(f.read())) if m.id}
    assert mo == po, f"{lang}: messages.mo is out of date; run pybabel compile (locale/README.md)"


def test_taiwan_catalog_uses_taiwan_vocabulary() -> None:
    tw = catalog("zh_TW")
    cn = catalog("zh_CN")
    for m in tw:
        for word in ZH_CN_ONLY:
            assert word not in (m.string or ""), f"zh_TW: {m.id!r} uses mainland word {word!r}: {m.string!r}"
    assert tw["Memory"].string == "記憶體" and tw["Images"].string == "映像檔" and tw["Network"].string == "網路"
    differ = sum(1 for m in tw if m.id and m.string != cn[m.id].string)
    assert differ > 150  # a localisation, not a copy


def test_catalog_check_catches_a_fuzzy_or_broken_entry(tmp_path: Path) -> None:
    """The checks above are real: a broken catalog trips them."""
    text = (LOCALE / "zh_TW" / "LC_MESSAGES" / "messages.po").read_text()
    broken = text.replace('msgstr "共 %(total)s 筆，第 %(page)s/%(pages)s 頁"', 'msgstr "共 %(total)s 筆"')
    assert broken != text
    cat = read_po(io.BytesIO(broken.encode()), locale="zh_TW")
    m = cat["%(total)s in total, page %(page)s of %(pages)s"]
    assert sorted(PLACEHOLDER.findall(m.id)) != sorted(PLACEHOLDER.findall(m.string))
