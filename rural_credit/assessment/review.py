"""People over the recommendation: officer overrides (maker-checker) and farmers' appeals.

The library models the rules; the cloud stores the records and their ``events`` (the log).

* An **override** changes a decision's outcome.  One officer (the maker) proposes it with a reason;
  it takes effect only when a *different* officer (the checker) approves it.  A rejected or pending
  override changes nothing.  Every step is an event with who, when and what.
* An **appeal** is the farmer's note against a decision; filing it puts the case "under review by a
  person" (status ``under_review``) with the note attached, until an officer closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rural_credit.assessment.decision import Decision, Outcome

MAX_NOTE = 2000


class ReviewError(ValueError):
    """An override or appeal step the rules do not allow; the message says which rule."""


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    at: datetime
    by: str
    action: str
    note: str = ""


class Override(BaseModel):
    model_config = ConfigDict(frozen=True)
    decision_key: str
    from_outcome: Outcome
    to_outcome: Outcome
    reason: str
    maker: str
    status: Literal["pending", "approved", "rejected"] = "pending"
    checker: str | None = None
    events: list[Event] = Field(default_factory=list)


class Appeal(BaseModel):
    model_config = ConfigDict(frozen=True)
    decision_key: str
    outcome: Outcome
    note: str
    status: Literal["under_review", "upheld", "changed"] = "under_review"
    status_text: str = "under review by a person"
    events: list[Event] = Field(default_factory=list)


def _who(name: str, role: str) -> str:
    if not name or not name.strip():
        raise ReviewError(f"the {role} must be named")
    return name.strip()


def propose_override(decision: Decision, to_outcome: Outcome, reason: str, maker: str,
                     at: datetime | None = None) -> Override:
    """An officer proposes another outcome; it needs a reason and waits for a second officer."""
    maker = _who(maker, "maker")
    if to_outcome == decision.outcome:
        raise ReviewError(f"the decision is already {decision.outcome}")
    if not reason or len(reason.strip()) < 10:
        raise ReviewError("an override needs a reason (at least 10 characters) that a checker can judge")
    at = at or datetime.now(UTC)
    return Override(decision_key=decision.key, from_outcome=decision.outcome, to_outcome=to_outcome,
                    reason=reason.strip(), maker=maker,
                    events=[Event(at=at, by=maker, action=f"proposed {decision.outcome} -> {to_outcome}",
                                  note=reason.strip())])


def check_override(override: Override, checker: str, approve: bool, note: str = "",
                   at: datetime | None = None) -> Override:
    """The second officer approves or rejects a pending override; the maker cannot check their own."""
    checker = _who(checker, "checker")
    if override.status != "pending":
        raise ReviewError(f"the override is already {override.status}")
    if checker == override.maker:
        raise ReviewError(f"{checker} proposed this override; a second officer must check it (maker-checker)")
    status = "approved" if approve else "rejected"
    event = Event(at=at or datetime.now(UTC), by=checker, action=status, note=note.strip())
    return override.model_copy(update={"status": status, "checker": checker, "events": [*override.events, event]})


def final_outcome(decision: Decision, overrides: Iterable[Override] = ()) -> Outcome:
    """The outcome in force: the last approved override of this decision, else the recommendation."""
    approved = [o for o in overrides if o.decision_key == decision.key and o.status == "approved"]
    return approved[-1].to_outcome if approved else decision.outcome


def file_appeal(decision: Decision, note: str, farmer: str, at: datetime | None = None) -> Appeal:
    """The farmer's appeal: the case goes before a person with the note."""
    farmer = _who(farmer, "farmer")
    if decision.outcome == "approve":
        raise ReviewError("an approved application has nothing to appeal")
    if not note or not note.strip():
        raise ReviewError("an appeal needs the farmer's note")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"the note has {len(note)} characters; at most {MAX_NOTE}")
    return Appeal(decision_key=decision.key, outcome=decision.outcome, note=note.strip(),
                  events=[Event(at=at or datetime.now(UTC), by=farmer, action="appealed", note=note.strip())])


def close_appeal(appeal: Appeal, officer: str, changed: bool, note: str, at: datetime | None = None) -> Appeal:
    """A person closes the review: the decision stands (``upheld``) or was changed (by an override)."""
    officer = _who(officer, "officer")
    if appeal.status != "under_review":
        raise ReviewError(f"the appeal is already {appeal.status}")
    if not note.strip():
        raise ReviewError("closing an appeal needs the officer's note to the farmer")
    status = "changed" if changed else "upheld"
    event = Event(at=at or datetime.now(UTC), by=officer, action=status, note=note.strip())
    return appeal.model_copy(update={"status": status, "status_text": f"reviewed by a person: {status}",
                                     "events": [*appeal.events, event]})
