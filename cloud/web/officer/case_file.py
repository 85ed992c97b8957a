"""The PDF case file of an application for the loan folder: the application, the score and grade with the
reason codes, the data trust breakdown and coverage, the provenance hash, the recommendation and limit, the
products, every decision (overrides with their maker and checker), appeals, notices as issued, and the
audit trail — the same facts as the application page, in both languages' reason texts.

Drawn with fpdf2.  Chinese needs a CJK font: Debian's ``fonts-noto-cjk`` (:data:`CJK_FONTS`) when present;
without it the file is written in the PDF core font and every character it cannot draw becomes "?"
(:attr:`CaseFile.cjk` says which, and the file's first line says so too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from cloud.audit.log import AuditEntry
from cloud.credit.service import ApplicationView

CJK_FONTS = (Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
             Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"))
#: the face of the .ttc collection with simplified Chinese first ("Noto Sans CJK SC")
CJK_FACE = 2


@dataclass(frozen=True)
class CaseFile:
    pdf: bytes
    cjk: bool
    """Chinese drawn with a CJK font (False: the core font, Chinese shown as '?')"""


class _Writer:
    def __init__(self, title: str) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_title(title)
        self.pdf.set_creator("FieldTrust officer console")
        self.pdf.set_auto_page_break(True, margin=15)
        self.pdf.add_page()
        font = next((f for f in CJK_FONTS if f.is_file()), None)
        self.cjk = font is not None
        if font is not None:
            self.pdf.add_font("cjk", fname=str(font), collection_font_number=CJK_FACE)
            self.family = "cjk"
        else:
            self.family = "helvetica"

    def _text(self, text: str) -> str:
        if self.cjk:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")

    def heading(self, text: str) -> None:
        self.pdf.ln(2)
        self.pdf.set_font(self.family, size=13)
        self.pdf.multi_cell(0, 7, self._text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.set_font(self.family, size=9)

    def line(self, text: str) -> None:
        self.pdf.set_font(self.family, size=9)
        self.pdf.multi_cell(0, 5, self._text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pairs(self, pairs: list[tuple[str, object]]) -> None:
        for key, value in pairs:
            self.line(f"{key}: {'—' if value is None else value}")


def case_file(view: ApplicationView, trail: list[AuditEntry], tenant_name: str) -> CaseFile:
    app, a = view.application, view.assessment
    w = _Writer(f"Case file {app.id}")
    w.pdf.set_font(w.family, size=16)
    w.pdf.multi_cell(0, 9, w._text(f"Loan application case file 贷款申请档案 — {app.id}"), new_x=XPos.LMARGIN,
                     new_y=YPos.NEXT)
    if not w.cjk:
        w.line("Chinese text is shown as '?': install fonts-noto-cjk for a CJK font.")
    w.heading("Application 申请")
    w.pairs([("Tenant", tenant_name), ("Application", app.id), ("Farmer", app.farmer_id), ("Farm", app.farm_id),
             ("Season", f"{app.season} ({app.season_start.date()} – {app.season_end.date()})"),
             ("Amount", f"{app.amount:,.2f} {a.currency if a else ''}"), ("Term (months)", app.term_months),
             ("Purpose", app.purpose), ("Product asked for", app.product_id or "any"),
             ("Prior loans / repaid", f"{app.prior_loans} / {app.prior_repaid}"),
             ("Status", app.status), ("Outcome in force", app.outcome), ("Submitted by", app.submitted_by),
             ("Assisted by clerk", app.assisted_by), ("Filed at", app.created_at.isoformat(timespec="seconds"))])
    if a is not None:
        w.heading("Score and grade 评分与等级")
        w.pairs([("Score", a.score), ("Grade", a.grade), ("Probability of a bad", f"{a.pd:.3f}"),
                 ("Score with every missing or untrusted value at its best", a.optimistic_score),
                 ("Model", f"{a.model_name} {a.model_version} (sha256 {a.model_sha256})"),
                 ("Policy / shelf", f"{a.policy_version} / shelf v{a.shelf_version}")])
        w.heading("Reason codes 原因代码")
        for r in a.reasons:
            w.line(f"{r.get('code') or r.get('characteristic')}: {r['text']['en']} / {r['text']['zh-CN']}"
                   f" ({r.get('points_lost')} points lost)")
        if not a.reasons:
            w.line("none")
        w.heading("Data trust 数据可信度")
        w.pairs([("Trust", None if a.trust is None else f"{a.trust:.2f}"),
                 ("Coverage", None if a.coverage is None else f"{a.coverage:.0%}"),
                 ("Provenance (SHA-256 of the readings used)", a.provenance_sha256),
                 ("Data read (consented)", ", ".join(a.data_scopes) or "none"),
                 ("Data withheld (no consent)", ", ".join(a.data_withheld) or "none"),
                 ("Untrusted sources", ", ".join(a.untrusted_sources) or "none")])
        for part, value in sorted(a.trust_parts.items()):
            w.line(f"  {part}: {value:.2f}")
        w.heading("Recommendation and limit 建议与额度")
        w.pairs([("Recommendation", a.recommendation),
                 ("Limit", None if a.credit_limit is None else f"{a.credit_limit:,.2f} {a.currency}")])
        for r in a.decision.get("reasons", []):
            w.line(f"  {r['text']['en']} / {r['text']['zh-CN']}")
        w.heading("Products 产品")
        for p in a.products:
            cost = p.get("cost") or {}
            w.line(f"{p['product_id']} ({p['name']} {p['name_zh']}): {'fits' if p['eligible'] else 'does not fit'}"
                   + (f"; interest {cost['total_interest']:,.2f}, repay {cost['total_repayable']:,.2f}"
                      if p["eligible"] and cost else ""))
    w.heading("Decisions 决定")
    for d in view.decisions:
        w.line(f"{d.created_at.isoformat(timespec='seconds')} {d.id}: {d.outcome} (recommended {d.recommended})"
               f" by {d.maker}, {d.status}" + (f", override: {d.reason}" if d.override else "")
               + (f"; checked by {d.checker}: {d.checker_note or ''}" if d.checker else ""))
    if not view.decisions:
        w.line("none yet")
    if view.appeals:
        w.heading("Appeals 申诉")
        for ap in view.appeals:
            w.line(f"{ap.created_at.isoformat(timespec='seconds')} {ap.id}: {ap.status} — \"{ap.note}\"")
    for n in view.notices:
        w.heading(f"Adverse-action notice 拒贷通知 ({n.issued_at.isoformat(timespec='seconds')})")
        w.line(n.text_en)
        w.line(n.text_zh)
    w.heading("Audit trail 审计记录")
    for e in trail:
        detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True) if getattr(e, "detail", None) else ""
        w.line(f"{e.at.isoformat(timespec='seconds')} {e.action} by {e.actor_name or e.actor_id} {detail}"[:600])
    return CaseFile(bytes(w.pdf.output()), w.cjk)
