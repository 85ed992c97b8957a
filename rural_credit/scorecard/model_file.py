"""The scorecard model as versioned data: a JSON file that says everything scoring needs, and nothing else.

A model is the points table (characteristics → bins → integer points), the scaling that produced
it (base score, base odds and points to double the odds, with the odds convention spelled out), the
grades, and the training distributions that monitoring compares against.  Scoring reads this file
with numpy and pandas only; nothing here is pickled, so a model can be read, diffed and approved.

``format_version`` changes whenever a reader of an older version would misread a newer file;
``load`` refuses a version it does not know rather than guessing.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT = "fieldtrust.scorecard"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read: wrong format, unknown version or invalid content."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bin(_Frozen):
    """One bin: an interval ``[lower, upper)`` (numerical; ``None`` is unbounded) or a group of categories."""

    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None
    count: int = Field(ge=0, description="training rows in the bin")
    bads: int = Field(ge=0, description="training rows in the bin that were bad")
    woe: float = Field(description="weight of evidence, ln(share of goods / share of bads): > 0 is better")
    points: int

    def label(self) -> str:
        if self.categories is not None:
            return ", ".join(self.categories)
        lo = "-inf" if self.lower is None else f"{self.lower:g}"
        hi = "inf" if self.upper is None else f"{self.upper:g}"
        return f"[{lo}, {hi})"


class Characteristic(_Frozen):
    """A scored input column: its bins, the logistic-regression coefficient and its neutral points."""

    name: str
    code: str = Field(description="stable reason code, e.g. RC03")
    kind: Literal["numerical", "categorical"]
    trend: str = Field(description="bad-rate trend the binning was constrained to")
    coefficient: float = Field(description="coefficient of the WoE in the logit of a bad")
    iv: float = Field(ge=0, description="information value on the training data")
    bins: list[Bin] = Field(min_length=1)
    neutral_points: int = Field(description="points of a WoE of 0: what missing, untrusted or unknown values earn")
    missing_count: int = Field(ge=0, description="training rows without a value (for CSI)")

    @model_validator(mode="after")
    def _bins_fit_kind(self) -> Characteristic:
        if self.kind == "numerical":
            if any(b.categories is not None for b in self.bins):
                raise ValueError(f"{self.name}: a numerical characteristic's bins have no categories")
            if self.bins[0].lower is not None or self.bins[-1].upper is not None:
                raise ValueError(f"{self.name}: numerical bins must start at -inf and end at +inf (null)")
            for a, b in zip(self.bins, self.bins[1:], strict=False):
                if a.upper is None or b.lower != a.upper:
                    raise ValueError(f"{self.name}: numerical bins must be contiguous ({a.label()} then {b.label()})")
            if self.splits() != sorted(set(self.splits())):
                raise ValueError(f"{self.name}: numerical bin bounds must increase")
        else:
            seen: set[str] = set()
            for b in self.bins:
                if not b.categories:
                    raise ValueError(f"{self.name}: every categorical bin needs categories")
                if seen & set(b.categories):
                    raise ValueError(f"{self.name}: categories {sorted(seen & set(b.categories))} are in two bins")
                seen |= set(b.categories)
        return self

    def splits(self) -> list[float]:
        return [b.upper for b in self.bins[:-1] if b.upper is not None]

    @property
    def max_points(self) -> int:
        return max(b.points for b in self.bins)

    @property
    def min_points(self) -> int:
        return min(b.points for b in self.bins)


class Scaling(_Frozen):
    """score = offset + factor · ln(odds), odds = good:bad; ``base_score`` at ``base_odds``, +``pdo`` doubles them."""

    odds: Literal["good:bad"] = "good:bad"
    base_score: float = 600.0
    base_odds: float = Field(50.0, gt=0)
    pdo: float = Field(20.0, gt=0)

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def pd_of(self, score: float) -> float:
        """Probability of a bad at ``score``."""
        return 1.0 / (1.0 + math.exp((score - self.offset) / self.factor))

    def score_of(self, pd: float) -> float:
        """The (real) score whose probability of a bad is ``pd``."""
        return self.offset + self.factor * math.log((1 - pd) / pd)


class Grade(_Frozen):
    """A grade band: scores ``>= min_score`` (``None``: any score), i.e. a probability of a bad ``<= max_pd``."""

    grade: str
    min_score: int | None
    max_pd: float | None = Field(None, gt=0, lt=1)


class ScoreBands(_Frozen):
    """Score bands for PSI: band i holds scores in ``[edges[i-1], edges[i])``; ``expected`` = training shares."""

    edges: list[float]
    expected: list[float]

    @model_validator(mode="after")
    def _shapes(self) -> ScoreBands:
        if len(self.expected) != len(self.edges) + 1:
            raise ValueError("score bands: expected needs one share more than there are edges")
        return self


class ModelFile(_Frozen):
    """Everything a scorecard is: the file ``model.json`` of a registry version."""

    format: Literal["fieldtrust.scorecard"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    version: str | None = None
    created_at: datetime
    target: str
    bad_value: str
    training_rows: int = Field(gt=0)
    training_bads: int = Field(gt=0)
    intercept: float = Field(description="intercept of the logit of a bad")
    scaling: Scaling
    characteristics: list[Characteristic] = Field(min_length=1)
    grades: list[Grade] = Field(min_length=1)
    score_bands: ScoreBands

    @model_validator(mode="after")
    def _consistent(self) -> ModelFile:
        names = [c.name for c in self.characteristics]
        if len(set(names)) != len(names):
            raise ValueError("characteristic names must be unique")
        if len({c.code for c in self.characteristics}) != len(names):
            raise ValueError("reason codes must be unique")
        cuts = [g.min_score for g in self.grades]
        if cuts[-1] is not None or any(c is None for c in cuts[:-1]):
            raise ValueError("grades: every grade but the last needs min_score; the last takes the rest (null)")
        if cuts[:-1] != sorted(cuts[:-1], reverse=True):  # type: ignore[type-var]
            raise ValueError("grades must be listed from the best (highest min_score) down")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def save(model: ModelFile, path: Path) -> None:
    """Write ``model`` to ``path`` (atomically: a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(model.to_json(), encoding="utf-8")
    tmp.replace(path)


def parse(text: str, source: str = "model file") -> ModelFile:
    """Read a model from JSON text, checking format and version before the content."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelFileError(f"{source} is not a FieldTrust scorecard (format must be {FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{source} has format_version {raw.get('format_version')!r}; "
                             f"this FieldTrust reads version {FORMAT_VERSION}")
    try:
        return ModelFile.model_validate(raw)
    except ValidationError as exc:
        raise ModelFileError(f"{source} is invalid: {exc}") from exc


def load(path: Path) -> ModelFile:
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    return parse(path.read_text(encoding="utf-8"), str(path))
