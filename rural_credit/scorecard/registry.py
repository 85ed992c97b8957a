"""A model registry on disk: numbered versions, each a model file and its model card.

```
DIR/v0001/model.json   the scorecard (model_file), never edited once written
DIR/v0001/card.json    who trained it on what, how well it did, and its approval state and role
```

The card records the SHA-256 of the training data and of ``model.json``; ``load_model`` refuses a
model whose file no longer matches its card.  A version starts as a *draft*; it is *approved* by
someone other than its owner (four eyes), and only an approved version can be the *champion* (the
one that scores) or a *challenger* (scored alongside for comparison).  Promoting a champion makes the
previous one a challenger; a *retired* version has no role and cannot come back.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rural_credit.scorecard import model_file
from rural_credit.scorecard.model_file import ModelFile

State = Literal["draft", "approved", "retired"]
Role = Literal["champion", "challenger"]
_VERSION = re.compile(r"^v\d{4}$")


class RegistryError(ValueError):
    """A registry operation that is not allowed or a registry that cannot be read."""


class DataSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    source: str | None = None
    rows: int
    bads: int
    bad_rate: float


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    created_at: datetime
    owner: str = Field(min_length=1, description="who trained the model")
    target: str
    bad_value: str
    data: DataSummary
    model_sha256: str
    characteristics: list[str]
    dropped: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(description="cross-validated and in-sample discrimination, with CIs")
    state: State = "draft"
    role: Role | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    retired_at: datetime | None = None


class ModelRegistry:
    """The versions under one directory (created on the first ``register``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _VERSION.match(p.name) and (p / "card.json").is_file())

    def register(self, model: ModelFile, owner: str, data: DataSummary, metrics: dict[str, Any],
                 dropped: dict[str, str] | None = None) -> ModelCard:
        """Store ``model`` as the next version, a draft owned by ``owner``."""
        existing = self.versions()
        version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
        model = model.model_copy(update={"version": version})
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=False)
        model_file.save(model, folder / "model.json")
        card = ModelCard(name=model.name, version=version, created_at=datetime.now(UTC), owner=owner,
                         target=model.target, bad_value=model.bad_value, data=data,
                         model_sha256=file_sha256(folder / "model.json"),
                         characteristics=[c.name for c in model.characteristics], dropped=dropped or {},
                         metrics=metrics)
        self._write(card)
        return card

    def card(self, version: str) -> ModelCard:
        path = self.root / version / "card.json"
        if not _VERSION.match(version) or not path.is_file():
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no version {version!r} in {self.root} (versions: {known})")
        try:
            return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise RegistryError(f"{path} is not a valid model card: {exc}") from exc

    def cards(self) -> list[ModelCard]:
        return [self.card(v) for v in self.versions()]

    def load_model(self, version: str) -> ModelFile:
        card = self.card(version)
        path = self.root / version / "model.json"
        if file_sha256(path) != card.model_sha256:
            raise RegistryError(f"{path} does not match its model card (SHA-256 differs): it was changed")
        return model_file.load(path)

    def champion(self) -> str | None:
        return next((c.version for c in self.cards() if c.role == "champion"), None)

    def approve(self, version: str, approver: str) -> ModelCard:
        card = self.card(version)
        if card.state != "draft":
            raise RegistryError(f"{version} is {card.state}; only a draft can be approved")
        if not approver.strip():
            raise RegistryError("an approval needs the approver's name")
        if approver.strip() == card.owner:
            raise RegistryError(f"{version} was trained by {card.owner}; someone else must approve it")
        return self._write(card.model_copy(update={"state": "approved", "approved_by": approver.strip(),
                                                   "approved_at": datetime.now(UTC)}))

    def promote(self, version: str, role: Role = "champion") -> ModelCard:
        """Make an approved version the champion (the old one becomes a challenger) or a challenger."""
        card = self.card(version)
        if card.state != "approved":
            raise RegistryError(f"{version} is {card.state}; only an approved version can be {role}")
        if role == "champion":
            for other in self.cards():
                if other.role == "champion" and other.version != version:
                    self._write(other.model_copy(update={"role": "challenger"}))
        return self._write(card.model_copy(update={"role": role}))

    def retire(self, version: str) -> ModelCard:
        card = self.card(version)
        if card.state == "retired":
            raise RegistryError(f"{version} is already retired")
        return self._write(card.model_copy(update={"state": "retired", "role": None,
                                                   "retired_at": datetime.now(UTC)}))

    def resolve(self, version: str | None = None) -> tuple[ModelCard, ModelFile]:
        """The card and model of ``version``; by default the champion, else the latest version not retired."""
        if version is None:
            live = [c.version for c in self.cards() if c.state != "retired"]
            if not live:
                raise RegistryError(f"{self.root} holds no model that is not retired "
                                    f"(train one with --out {self.root})")
            version = self.champion() or live[-1]
        return self.card(version), self.load_model(version)

    def _write(self, card: ModelCard) -> ModelCard:
        path = self.root / card.version / "card.json"
        tmp = path.with_name("card.json.tmp")
        tmp.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return card


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
