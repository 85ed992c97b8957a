"""A loan application's life: submit → assess → recommend; an officer decides; overrides need a second
officer (maker-checker); a farmer appeals to a person; the farmer or an officer cancels.

State (``ft.loan_applications.status``)::

    submitted → scored → approved | referred | declined ──appeal──► appealed → under_review → decided
          (any open state) ──cancel──► cancelled

* **Decide** (``credit:decide``) on a scored, referred, appealed or under-review application.  The
  recommendation's outcome is in force at once.  Any other outcome is an **override**: it needs a reason
  (≥ 10 characters, the library's rule) and waits, ``pending``, until a *different* officer approves it
  (then it is in force) or rejects it (the recommendation stands, and the case waits for a decision).
  One override may be pending at a time.  A decline in force issues the adverse-action notice (zh-CN and
  en, stored as issued).  Deciding a case under appeal closes the appeal (``upheld`` when the appealed
  outcome stands, ``changed`` otherwise) and the application is ``decided``.
* **Appeal** (the farmer, or a clerk for the farmer) a decline or a referral in force, with the farmer's
  note: it goes before a person (``appealed``; an officer opens the review: ``under_review``).  One appeal
  per application.
* **Cancel** anything still open (submitted, scored, referred, approved, under appeal; a decided approval):
  pending overrides and open appeals are withdrawn with it.

Who reaches an application: officers (``credit:read``) every one of the tenant; a farmer their own; a
clerk (``credit:apply``) those of the tenant's farmers, whom they assist.  Another's is "not found".
Every step and every staff read is audited (``credit.*``) in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.auth.scopes import self_only
from cloud.credit import assess, data, models, records
from cloud.credit.errors import CreditConflict, CreditForbidden, CreditInvalid, CreditNotFound
from cloud.credit.records import Appeal, Application, Assessment, Decision, Notice
from rural_credit.assessment import review
from rural_credit.assessment.decision import Decision as LibraryDecision
from rural_credit.assessment.notice import adverse_action_notice
from rural_credit.assessment.reasons import Reason

TARGET = "loan_application"
DECIDABLE = ("scored", "referred", "appealed", "under_review")
APPEALABLE = ("declined", "referred")
CANCELLABLE = ("submitted", "scored", "referred", "approved", "appealed", "under_review")
STATUS_OF = {"approve": "approved", "refer": "referred", "decline": "declined"}
#: the line an officer's own reason is given under in a notice of an overridden decision
OFFICER_REASON = {"en": "The credit officer's reason: {reason}", "zh-CN": "信贷员说明：{reason}"}


@dataclass(frozen=True)
class ApplicationInput:
    farm_id: str
    amount: float
    term_months: int
    purpose: str
    season: str | None = None
    product_id: str | None = None
    prior_loans: int = 0
    prior_repaid: int = 0


@dataclass(frozen=True)
class ApplicationView:
    """An application with everything an officer (or the farmer) needs to see."""

    application: Application
    assessment: Assessment | None
    matched_products: list[dict[str, Any]]
    """the eligible products, cheapest first, with their costs"""
    decisions: list[Decision]
    appeals: list[Appeal]
    notices: list[Notice]
    """adverse-action notices as issued (declines)"""
    pending_override: Decision | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)


# -- who reaches what ------------------------------------------------------------------------------------------


def _reach(principal: Principal, app: Application) -> None:
    if principal.can("credit:read") and not self_only(principal):
        return
    if self_only(principal):
        if principal.farmer_id is None or app.farmer_id != principal.farmer_id:
            raise CreditNotFound(f"application {app.id!r} not found in tenant {app.tenant_id!r}")
        return
    if not principal.can("credit:apply"):
        raise CreditNotFound(f"application {app.id!r} not found in tenant {app.tenant_id!r}")


def _own_farm(principal: Principal, tenant: str, farm_id: str, farmer_id: str) -> None:
    if self_only(principal) and farmer_id != principal.farmer_id:
        raise CreditNotFound(f"farm {farm_id!r} not found in tenant {tenant!r}")


def _audit(conn: psycopg.Connection, principal: Principal, tenant: str, action: str, app: Application,
           **detail: Any) -> None:
    log.record(conn, principal, action, TARGET, app.id, farmer_id=app.farmer_id, purpose=data.PURPOSE,
               tenant_id=tenant, detail=assess.json_safe(detail))


# -- submit and assess ----------------------------------------------------------------------------------------


def submit(conn: psycopg.Connection, principal: Principal, tenant: str, inp: ApplicationInput,
           now: datetime | None = None) -> ApplicationView:
    """File an application and assess it; the farm's data is read only under the farmer's consent."""
    farmer_id, _ = data.farm_owner(conn, tenant, inp.farm_id)
    _own_farm(principal, tenant, inp.farm_id, farmer_id)
    if inp.prior_repaid > inp.prior_loans:
        raise CreditInvalid("prior_repaid: cannot exceed prior_loans")
    window = data.season_window(conn, tenant, inp.farm_id, inp.season, now)
    scoring = models.scoring(conn, tenant)
    if inp.product_id is not None and inp.product_id not in {p.id for p in scoring.shelf.shelf.products}:
        known = ", ".join(p.id for p in scoring.shelf.shelf.products)
        raise CreditInvalid(f"product_id: {inp.product_id!r} is not on the tenant's shelf ({known})")
    app_id = records.new_id("la")
    farm_data = data.load(conn, principal, tenant, {inp.farm_id: window}, target_type=TARGET, target_id=app_id,
                          farmers={inp.farm_id: farmer_id})
    application = {"amount": inp.amount, "term_months": inp.term_months, "purpose": inp.purpose,
                   "prior_loans": inp.prior_loans, "prior_repaid": inp.prior_repaid}
    result = assess.run(scoring, farm_data, inp.farm_id, application, assess.trust_report(farm_data, [inp.farm_id]))
    clerk = principal.id if principal.kind == "user" and "clerk" in principal.roles else None
    app = records.insert_application(conn, {
        "id": app_id, "tenant_id": tenant, "farmer_id": farmer_id, "farm_id": inp.farm_id, "season": window.season,
        "season_start": window.start, "season_end": window.end, "product_id": inp.product_id,
        **application, "submitted_by": principal.id, "assisted_by": clerk})
    _audit(conn, principal, tenant, "credit.application_submitted", app, amount=inp.amount, purpose=inp.purpose,
           season=window.season)
    assessment = records.insert_assessment(conn, tenant, {"application_id": app.id,
                                                          **assess.stored(result, farm_data, scoring, principal.id)})
    records.set_status(conn, tenant, app.id, "scored")
    _audit(conn, principal, tenant, "credit.assessed", app, assessment=assessment.id, score=assessment.score,
           grade=assessment.grade, trust=assessment.trust, recommendation=assessment.recommendation,
           provenance_sha256=assessment.provenance_sha256, model=f"{assessment.model_name} {assessment.model_version}")
    return _view(conn, tenant, records.application(conn, tenant, app.id))


def _view(conn: psycopg.Connection, tenant: str, app: Application) -> ApplicationView:
    assessment = records.current_assessment(conn, tenant, app.id)
    decisions = records.decisions(conn, tenant, app.id)
    matched = [p for p in (assessment.products if assessment else []) if p.get("eligible")]
    pending = next((d for d in decisions if d.status == "pending"), None)
    return ApplicationView(app, assessment, matched, decisions, records.appeals(conn, tenant, app.id),
                           records.notices(conn, tenant, app.id), pending)


def get(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str) -> ApplicationView:
    """An application as its reader may see it; a staff or partner read is audited."""
    app = records.application(conn, tenant, application_id)
    _reach(principal, app)
    if not (self_only(principal) and app.farmer_id == principal.farmer_id):
        _audit(conn, principal, tenant, "credit.application_read", app)
    return _view(conn, tenant, app)


# -- officers decide ------------------------------------------------------------------------------------------


def decide(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str, outcome: str,
           reason: str = "") -> Decision:
    """An officer's decision: the recommendation's outcome is in force at once, another is a pending override."""
    app = records.application(conn, tenant, application_id, lock=True)
    if app.status not in DECIDABLE:
        raise CreditConflict(f"application {app.id} is {app.status}: only a {', '.join(DECIDABLE)} one is decided")
    decisions = records.decisions(conn, tenant, app.id)
    if any(d.status == "pending" for d in decisions):
        raise CreditConflict(f"application {app.id} has an override waiting for a second officer: approve or reject "
                             "it first")
    assessment = _assessment(conn, tenant, app)
    reason = reason.strip()
    appeal = _open_appeal(conn, tenant, app)
    if appeal is not None and not reason:
        raise CreditInvalid("reason: deciding an appeal needs a note to the farmer")
    if outcome != assessment.recommendation:
        try:
            review.propose_override(_library_decision(assessment, assessment.recommendation), outcome,  # type: ignore[arg-type]
                                    reason, principal.id)
        except review.ReviewError as exc:
            raise CreditInvalid(f"reason: {exc}") from None
        decision = records.insert_decision(conn, tenant, {
            "application_id": app.id, "assessment_id": assessment.id, "maker": principal.id, "outcome": outcome,
            "recommended": assessment.recommendation, "reason": reason, "status": "pending"})
        _audit(conn, principal, tenant, "credit.override_proposed", app, decision=decision.id, outcome=outcome,
               recommended=assessment.recommendation, reason=reason)
        return decision
    records.update_decisions(conn, tenant, app.id, "in_force", "superseded")
    decision = records.insert_decision(conn, tenant, {
        "application_id": app.id, "assessment_id": assessment.id, "maker": principal.id, "outcome": outcome,
        "recommended": assessment.recommendation, "reason": reason, "status": "in_force"})
    _in_force(conn, principal, tenant, app, assessment, decision, appeal)
    return decision


def check_override(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str,
                   decision_id: str, approve: bool, note: str = "") -> Decision:
    """The second officer approves (in force) or rejects (the recommendation stands) a pending override."""
    app = records.application(conn, tenant, application_id, lock=True)
    decision = next((d for d in records.decisions(conn, tenant, app.id) if d.id == decision_id), None)
    if decision is None:
        raise CreditNotFound(f"decision {decision_id!r} not found on application {app.id}")
    if decision.status != "pending":
        raise CreditConflict(f"decision {decision.id} is {decision.status}, not an override waiting for approval")
    if decision.maker == principal.id:
        raise CreditForbidden(f"{principal.id} proposed this override: a second officer must check it (maker-checker)")
    assessment = _assessment(conn, tenant, app)
    if approve:
        records.update_decisions(conn, tenant, app.id, "in_force", "superseded")
    checked = records.check_decision(conn, tenant, decision.id, "in_force" if approve else "rejected", principal.id,
                                     note.strip())
    _audit(conn, principal, tenant, "credit.override_approved" if approve else "credit.override_rejected", app,
           decision=decision.id, maker=decision.maker, outcome=decision.outcome, note=note.strip())
    if approve:
        _in_force(conn, principal, tenant, app, assessment, checked, _open_appeal(conn, tenant, app))
    return checked


def _in_force(conn: psycopg.Connection, principal: Principal, tenant: str, app: Application, assessment: Assessment,
              decision: Decision, appeal: Appeal | None) -> None:
    """A decision takes effect: the application's status and outcome, the appeal it closes, the notice."""
    if appeal is not None:
        closed = "changed" if decision.outcome != appeal.appealed_outcome else "upheld"
        records.update_open_appeal(conn, tenant, app.id, status=closed, decision_id=decision.id, closed_at=_now(conn),
                                   reviewer=appeal.reviewer or principal.id)
        records.set_status(conn, tenant, app.id, "decided", decision.outcome)  # type: ignore[arg-type]
        _audit(conn, principal, tenant, "credit.appeal_closed", app, appeal=appeal.id, result=closed,
               decision=decision.id)
    else:
        records.set_status(conn, tenant, app.id, STATUS_OF[decision.outcome], decision.outcome)  # type: ignore[arg-type]
    _audit(conn, principal, tenant, "credit.decided", app, decision=decision.id, outcome=decision.outcome,
           recommended=decision.recommended, override=decision.override, maker=decision.maker,
           checker=decision.checker)
    if decision.outcome == "decline":
        notice = _issue_notice(conn, tenant, app, assessment, decision)
        _audit(conn, principal, tenant, "credit.notice_issued", app, notice=notice.id, decision=decision.id)


def _assessment(conn: psycopg.Connection, tenant: str, app: Application) -> Assessment:
    assessment = records.current_assessment(conn, tenant, app.id)
    if assessment is None:
        raise CreditConflict(f"application {app.id} has not been assessed")
    return assessment


def _open_appeal(conn: psycopg.Connection, tenant: str, app: Application) -> Appeal | None:
    return next((a for a in records.appeals(conn, tenant, app.id) if a.status in ("appealed", "under_review")), None)


def _now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


# -- notices --------------------------------------------------------------------------------------------------


def _library_decision(assessment: Assessment, outcome: str) -> LibraryDecision:
    """The library's Decision of a stored assessment, with ``outcome`` (a decline: its notice's reasons)."""
    d = assessment.decision
    recommended = outcome == assessment.recommendation
    reasons = [_reason(r) for r in d.get("reasons", [])] if recommended else []
    if recommended:
        principal = [_reason(r) for r in d.get("principal_reasons", [])]
    else:  # an override: the scorecard's own reasons are what the farmer can act on
        principal = [Reason(r["characteristic"], kind="characteristic", code=r.get("code"),
                            points_lost=r.get("points_lost")) for r in assessment.reasons]
    return LibraryDecision(key=assessment.decision_key, outcome=outcome, reasons=reasons,  # type: ignore[arg-type]
                           principal_reasons=principal, product_id=d.get("product_id"),
                           amount=float(d.get("amount") or 0.0), currency=assessment.currency,
                           limit=assessment.credit_limit, policy_version=assessment.policy_version,
                           score=assessment.score, grade=assessment.grade)


def _reason(stored: dict[str, Any]) -> Reason:
    return Reason(stored["key"], dict(stored.get("params") or {}), stored.get("kind", "decision"), stored.get("code"),
                  stored.get("points_lost"))


def _issue_notice(conn: psycopg.Connection, tenant: str, app: Application, assessment: Assessment,
                  decision: Decision) -> Notice:
    notice = adverse_action_notice(_library_decision(assessment, "decline"), assessment.hint or None)
    texts = dict(notice.text)
    if decision.override:
        for lang in texts:
            texts[lang] += OFFICER_REASON[lang].format(reason=decision.reason) + "\n"
    return records.insert_notice(conn, tenant, {"application_id": app.id, "decision_id": decision.id,
                                                "text_zh": texts["zh-CN"], "text_en": texts["en"],
                                                "reasons": notice.reasons})


# -- appeals and cancelling -------------------------------------------------------------------------------------


def appeal(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str, note: str) -> Appeal:
    """The farmer's appeal of a decline or referral in force: the case goes before a person with the note."""
    app = records.application(conn, tenant, application_id, lock=True)
    _reach(principal, app)
    if app.status not in APPEALABLE or app.outcome is None:
        raise CreditConflict(f"application {app.id} is {app.status}: only a declined or referred decision in force "
                             "can be appealed")
    if records.appeals(conn, tenant, app.id):
        raise CreditConflict(f"application {app.id} was appealed already; a person has reviewed or is reviewing it")
    assessment = _assessment(conn, tenant, app)
    try:
        checked = review.file_appeal(_library_decision(assessment, app.outcome), note, principal.id)
    except review.ReviewError as exc:
        raise CreditInvalid(f"note: {exc}") from None
    filed = records.insert_appeal(conn, tenant, {"application_id": app.id, "appealed_outcome": app.outcome,
                                                 "note": checked.note, "filed_by": principal.id})
    records.set_status(conn, tenant, app.id, "appealed", keep_outcome=True)
    _audit(conn, principal, tenant, "credit.appealed", app, appeal=filed.id, outcome=app.outcome)
    return filed


def start_review(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str) -> Appeal:
    """An officer takes up an appeal (``under_review``)."""
    app = records.application(conn, tenant, application_id, lock=True)
    if app.status != "appealed":
        raise CreditConflict(f"application {app.id} is {app.status}: there is no appeal waiting for a review")
    records.update_open_appeal(conn, tenant, app.id, status="under_review", reviewer=principal.id,
                               review_started_at=_now(conn))
    records.set_status(conn, tenant, app.id, "under_review", keep_outcome=True)
    opened = _open_appeal(conn, tenant, app)
    assert opened is not None
    _audit(conn, principal, tenant, "credit.appeal_review_started", app, appeal=opened.id)
    return opened


def cancel(conn: psycopg.Connection, principal: Principal, tenant: str, application_id: str,
           note: str = "") -> Application:
    """Cancel an open application (pending overrides and an open appeal are withdrawn with it)."""
    app = records.application(conn, tenant, application_id, lock=True)
    _reach(principal, app)
    if not (app.status in CANCELLABLE or (app.status == "decided" and app.outcome == "approve")):
        raise CreditConflict(f"application {app.id} is {app.status}"
                             f"{' (' + app.outcome + ')' if app.outcome else ''}: it cannot be cancelled")
    records.update_decisions(conn, tenant, app.id, "pending", "withdrawn")
    records.update_open_appeal(conn, tenant, app.id, status="withdrawn", closed_at=_now(conn))
    records.set_status(conn, tenant, app.id, "cancelled", keep_outcome=True)
    _audit(conn, principal, tenant, "credit.cancelled", app, previous_status=app.status, note=note.strip())
    return records.application(conn, tenant, app.id)


# -- products for a farm ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FarmProducts:
    """The shelf ranked for one farm and a prospective application (nothing is stored)."""

    farm_id: str
    season: str
    score: int
    grade: str
    trust: float | None
    coverage: float | None
    recommendation: str
    currency: str
    products: list[dict[str, Any]]
    """every product, eligible ones first (cheapest first), each with why (not) and its costs"""


def farm_products(conn: psycopg.Connection, principal: Principal, tenant: str, inp: ApplicationInput,
                  now: datetime | None = None) -> FarmProducts:
    """Which of the tenant's products fit this farm for this amount, term and purpose, at what cost: an
    assessment run for it (under the farmer's consent, audited) but not stored."""
    farmer_id, _ = data.farm_owner(conn, tenant, inp.farm_id)
    _own_farm(principal, tenant, inp.farm_id, farmer_id)
    window = data.season_window(conn, tenant, inp.farm_id, inp.season, now)
    scoring = models.scoring(conn, tenant)
    farm_data = data.load(conn, principal, tenant, {inp.farm_id: window}, target_type="farm", target_id=inp.farm_id,
                          farmers={inp.farm_id: farmer_id})
    application = {"amount": inp.amount, "term_months": inp.term_months, "purpose": inp.purpose,
                   "prior_loans": inp.prior_loans, "prior_repaid": inp.prior_repaid}
    result = assess.run(scoring, farm_data, inp.farm_id, application, assess.trust_report(farm_data, [inp.farm_id]))
    d = assess.json_safe(result.as_dict())
    return FarmProducts(inp.farm_id, window.season, d["score"], d["grade"], d["trust"]["trust"],
                        d["trust"]["coverage"], d["decision"]["outcome"], scoring.shelf.shelf.currency, d["products"])
