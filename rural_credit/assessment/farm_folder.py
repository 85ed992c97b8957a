"""A folder of CSV files holding farm data, for the command line and the demo (the cloud hands frames instead).

```
registry.csv   farm_id, area_ha, crop, tenure, seasons_observed (optional: region, sex, age)
seasons.csv    farm_id, season_id, start, end, crop          (UTC ISO times)
rollups.csv    farm_id, device_id, metric, bucket, n, sum, min, max   (daily rollups)
trust.csv      farm_id, trust, coverage, … (trust as computed from the readings; optional)
readings.csv   raw readings (rural_credit.trust.frames READINGS), instead of rollups + trust (optional)
yields.csv     farm_id, crop, yield_t_per_ha  (recorded harvests, for the limit; optional)
```

``fieldtrust credit demo-world`` writes such a folder of SYNTHETIC farms (with a ``SYNTHETIC.txt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rural_credit.assessment.pipeline import Assessment, AssessmentError, Assessor, assess

REQUIRED = ("registry.csv", "seasons.csv")


@dataclass(frozen=True)
class FarmFolder:
    registry: pd.DataFrame
    seasons: pd.DataFrame
    rollups: pd.DataFrame | None
    trust: pd.DataFrame | None
    readings: pd.DataFrame | None
    yields: pd.DataFrame | None


def read_farm_folder(folder: Path) -> FarmFolder:
    folder = Path(folder)
    if not folder.is_dir():
        raise AssessmentError(f"no farm data folder {folder}")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise AssessmentError(f"{folder} lacks {', '.join(missing)}")

    def read(name: str, times: tuple[str, ...] = ()) -> pd.DataFrame | None:
        path = folder / name
        if not path.is_file():
            return None
        try:
            frame = pd.read_csv(path, dtype={"farm_id": str, "season_id": str, "device_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise AssessmentError(f"{path} is not a readable CSV: {exc}") from None
        for column in times:
            if column in frame.columns:
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    return FarmFolder(read("registry.csv"), read("seasons.csv", ("start", "end")),  # type: ignore[arg-type]
                      read("rollups.csv", ("bucket",)), read("trust.csv"), read("readings.csv", ("ts",)),
                      read("yields.csv"))


def assess_from_folder(assessor: Assessor, folder: FarmFolder, application: Mapping[str, Any]) -> Assessment:
    """Assess ``application`` (farm_id, season_id, amount, term_months, purpose, prior_loans, prior_repaid)."""
    farm_id, season_id = str(application.get("farm_id", "")), str(application.get("season_id", ""))
    farms = folder.registry[folder.registry["farm_id"] == farm_id]
    seasons = folder.seasons[(folder.seasons["farm_id"] == farm_id) & (folder.seasons["season_id"] == season_id)]
    if farms.empty:
        raise AssessmentError(f"farm {farm_id!r} is not in registry.csv")
    if seasons.empty:
        raise AssessmentError(f"season {season_id!r} of farm {farm_id!r} is not in seasons.csv")
    season = seasons.iloc[0].to_dict()
    kwargs: dict[str, Any] = {"yields": folder.yields}
    if folder.readings is not None:
        kwargs["readings"] = folder.readings
    elif folder.rollups is not None:
        if folder.trust is None or farm_id not in set(folder.trust["farm_id"]):
            raise AssessmentError(f"rollups without trust for farm {farm_id!r}: add it to trust.csv "
                                  "(or give readings.csv so trust is assessed)")
        kwargs["rollups"] = folder.rollups[folder.rollups["farm_id"] == farm_id]
        kwargs["trust"] = folder.trust[folder.trust["farm_id"] == farm_id].iloc[0].to_dict()
    return assess(assessor, farms.iloc[0].to_dict(), application, season, **kwargs)
