"""The consent texts farmers are shown, in Chinese (zh-CN) and English: the one place they live.

A consent records the version of the texts it was given under: the SHA-256 of every text below (template,
purposes, data scopes, both languages) in a canonical JSON form, so any change to any word is a new version,
and a consent can always be matched to the words the farmer saw.  A grant must name the current version
(:data:`VERSION`): an app showing an older text is refused and must fetch the text again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, get_args

Purpose = Literal["credit_assessment", "insurance", "advice", "service_metrics"]
DataScope = Literal["soil", "weather", "yields", "registry", "usage"]
Language = Literal["zh-CN", "en"]
PURPOSES: tuple[str, ...] = get_args(Purpose)
DATA_SCOPES: tuple[str, ...] = get_args(DataScope)
LANGUAGES: tuple[str, ...] = get_args(Language)

_TEMPLATE = {
    "en": ("I allow {tenant} to use my {scopes} for {purpose}, until {until}. I can withdraw this consent at any "
           "time, in the app or at a service point. Every use of my data is recorded, and I can see who used it, "
           "when and why."),
    "zh-CN": ("本人同意 {tenant} 为{purpose}使用本人的{scopes}，有效期至 {until}。"
              "本人可随时通过应用或在服务网点撤回本同意。"
              "每一次使用本人数据都会被记录，本人可以查看谁在何时、因何原因使用了本人的数据。"),
}
_PURPOSES = {
    "credit_assessment": {"en": "assessing my loan application", "zh-CN": "评估本人的贷款申请"},
    "insurance": {"en": "my crop insurance (cover and claims)", "zh-CN": "本人的农业保险（承保与理赔）"},
    "advice": {"en": "farming advice to me", "zh-CN": "向本人提供农事建议"},
    # the terminal's usage events (cloud/web/usage_events.py): counted into the tenant's service metrics
    "service_metrics": {"en": "measuring and improving the service point's service",
                        "zh-CN": "统计和改进服务网点的服务"},
}
_SCOPES = {
    "soil": {"en": "soil sensor readings", "zh-CN": "土壤传感器数据"},
    "weather": {"en": "weather readings from my fields", "zh-CN": "本人田块的气象数据"},
    "yields": {"en": "harvest and yield records", "zh-CN": "收成与产量记录"},
    "registry": {"en": "farm and field records (location, area, crops)", "zh-CN": "农场与田块信息（位置、面积、作物）"},
    "usage": {"en": "use of the service-point terminal (pages opened, buttons pressed, time on each page)",
              "zh-CN": "服务网点终端的使用记录（打开的页面、按下的按钮、每页停留的时间）"},
}
_JOIN = {"en": ", ", "zh-CN": "、"}

VERSION = hashlib.sha256(json.dumps({"template": _TEMPLATE, "purposes": _PURPOSES, "scopes": _SCOPES, "join": _JOIN},
                                    sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def check(purpose: str, scopes: Iterable[str], language: str) -> list[str]:
    """The scopes in canonical order; ValueError naming what is not known."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}; got {language!r}")
    wanted = set(scopes)
    unknown = sorted(wanted - set(DATA_SCOPES))
    if unknown or not wanted:
        raise ValueError(f"scopes must be one or more of {', '.join(DATA_SCOPES)}; got {sorted(wanted)}")
    return [s for s in DATA_SCOPES if s in wanted]


def render(purpose: str, scopes: Iterable[str], language: str, *, tenant: str, until: datetime) -> str:
    """The consent text as the farmer reads it."""
    ordered = check(purpose, scopes, language)
    return _TEMPLATE[language].format(tenant=tenant, purpose=_PURPOSES[purpose][language],
                                      scopes=_JOIN[language].join(_SCOPES[s][language] for s in ordered),
                                      until=until.date().isoformat())
