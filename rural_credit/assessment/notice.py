"""The adverse-action notice: why an application was declined, in English and Chinese.

It lists the principal reasons — the scorecard's reason codes (at most four, ranked by points lost)
in plain language from the one catalogue (``reasons``), or the product reasons when no product fits —
the score and grade, what would help (the first counterfactual), how to appeal, and the assurance
that missing or untrusted data did not cause the decline (``decision`` rule 3 guarantees it).
"""

from __future__ import annotations

from dataclasses import dataclass

from rural_credit.assessment.decision import Decision
from rural_credit.assessment.reasons import LANGUAGES, text


@dataclass(frozen=True)
class Notice:
    decision_key: str
    reasons: dict[str, list[str]]  # language → principal reasons
    text: dict[str, str]  # language → the whole notice


def adverse_action_notice(decision: Decision, hint: dict[str, str] | None = None) -> Notice:
    """The notice of a declined decision in every catalogue language (``hint``: language → what would help)."""
    if decision.outcome != "decline":
        raise ValueError(f"an adverse-action notice is for a declined application; this one is {decision.outcome}")
    principal = decision.principal_reasons or decision.reasons
    reasons: dict[str, list[str]] = {}
    bodies: dict[str, str] = {}
    for lang in LANGUAGES:
        lines = [text("notice", "title", lang), "",
                 text("notice", "declined", lang, reference=decision.key[:12], amount=f"{decision.amount:,.0f}",
                      currency=decision.currency)]
        reasons[lang] = [r.text(lang) for r in principal]
        lines += [f"  {i}. {r}" for i, r in enumerate(reasons[lang], 1)]
        if decision.score is not None and decision.principal_reasons:
            lines += ["", text("notice", "score", lang, score=decision.score, grade=decision.grade)]
        if hint and hint.get(lang):
            lines.append(text("notice", "improve", lang, hint=hint[lang]))
        lines += ["", text("notice", "data_rights", lang), text("notice", "appeal", lang)]
        bodies[lang] = "\n".join(lines) + "\n"
    return Notice(decision.key, reasons, bodies)
