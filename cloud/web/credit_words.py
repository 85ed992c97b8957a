"""The words the loan pages (terminal "Products for me" / "Apply", the officer console) show for the credit
service's codes: application statuses, outcomes, purposes, trust bands, repayment kinds.

Marked with :func:`cloud.web.words.N_` for extraction; templates translate them at render time with
``_(...)``, falling back to the code for one not listed here (:func:`cloud.web.words.word`).  The codes are
:mod:`cloud.credit.service`'s and the shelf's (rural_credit/assessment/shelves/*.yaml).
"""

from __future__ import annotations

from cloud.web.words import N_

STATUSES = {
    "submitted": N_("received"), "scored": N_("waiting for an officer"), "approved": N_("approved"),
    "referred": N_("being checked by a person"), "declined": N_("declined"), "appealed": N_("appealed"),
    "under_review": N_("appeal being reviewed"), "decided": N_("decided after appeal"),
    "cancelled": N_("cancelled"),
}
OUTCOMES = {"approve": N_("approve"), "refer": N_("refer to a person"), "decline": N_("decline")}
LOAN_PURPOSES = {"inputs": N_("seeds, fertiliser and other inputs"), "equipment": N_("equipment"),
                 "irrigation": N_("irrigation"), "livestock": N_("livestock")}
REPAYMENT = {"monthly": N_("equal monthly instalments"), "end_of_term": N_("one payment at harvest")}
TRUST_BANDS = {"none": N_("no farm data"), "low": N_("low (below 0.6)"), "medium": N_("medium (0.6–0.8)"),
               "high": N_("high (0.8 and above)")}
DECISION_STATUS = {"pending": N_("waiting for a second officer"), "in_force": N_("in force"),
                   "rejected": N_("rejected by the second officer"), "superseded": N_("superseded"),
                   "withdrawn": N_("withdrawn")}
TABLES = {"STATUSES": STATUSES, "OUTCOMES": OUTCOMES, "LOAN_PURPOSES": LOAN_PURPOSES, "REPAYMENT": REPAYMENT,
          "TRUST_BANDS": TRUST_BANDS, "DECISION_STATUS": DECISION_STATUS}


def credit_word(table: str, code: str | None) -> str:
    """The English words (the catalogue's message id) of ``code`` in ``table``; the code itself if unknown."""
    if not code:
        return ""
    return TABLES[table].get(code, code)
