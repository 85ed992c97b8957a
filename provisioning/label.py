"""The enclosure label: device id, farm, spec in words and as a QR code (terminal and PNG, with segno).

The QR code holds a ``fieldtrust:`` URI (``fieldtrust:node/<tenant>/<device>?farm=…&spec=…``): a
phone scanning the box in the field gets the same ids the cloud knows the node by.  The PNG (QR only,
8 px per module with the standard 4-module quiet zone) is printed with the words beside it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import segno

SCALE = 8
BORDER = 4


@dataclass(frozen=True)
class Label:
    tenant: str
    device_id: str
    farm: str | None
    specs: tuple[str, ...]
    offline: bool = False

    @property
    def uri(self) -> str:
        query = urlencode({k: v for k, v in (("farm", self.farm), ("spec", ",".join(self.specs))) if v})
        return f"fieldtrust:node/{quote(self.tenant)}/{quote(self.device_id)}" + (f"?{query}" if query else "")

    def lines(self) -> list[str]:
        out = [f"FieldTrust node {self.device_id}", f"tenant {self.tenant}" + (f"  farm {self.farm}" if self.farm
                                                                              else "")]
        out += [f"sensor {s}" for s in self.specs]
        if self.offline:
            out.append("NOT YET REGISTERED: run `fieldtrust node sync` when online")
        return out

    def qr(self) -> segno.QRCode:
        return segno.make(self.uri, error="m", micro=False)

    def terminal(self) -> str:
        """The QR code in half-block characters, then the words."""
        buf = io.StringIO()
        self.qr().terminal(out=buf, compact=True, border=2)
        return buf.getvalue() + "\n".join(self.lines()) + "\n"

    def save_png(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.device_id}.png"
        self.qr().save(str(path), kind="png", scale=SCALE, border=BORDER)
        (directory / f"{self.device_id}.txt").write_text("\n".join(self.lines()) + "\n" + self.uri + "\n")
        return path
