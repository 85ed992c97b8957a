"""What the demo builds, by name: the tenant, its farms, and each farm's gateway, devices and nodes.

Names are fixed, so that a second run finds the first run's registrations, outboxes and data
again; device ids carry their farm (``f1-soil-north``) because device ids are unique platform-wide.
"""

from __future__ import annotations

from dataclasses import dataclass

TENANT_ID = "demo-coop"
TENANT_NAME = "Demo farmers' cooperative"
#: (name, spec, Modbus unit) on the farm's RS485 bus (a virtual serial port)
RTU_DEVICES = (("soil-north", "jxct-soil-7in1", 1), ("weather-mast", "renke-weather-fsxcs-n01", 2),
               ("rain-gauge", "dfrobot-sen0575-rain", 3))
#: (name, spec, Modbus unit) behind the farm's Modbus TCP pump-house controller
TCP_DEVICES = (("pump-meter", "eastron-sdm120-modbus", 1), ("well-level", "keller-series30-level", 2))
NODES_PER_FARM = 3
#: the sensor nodes' interval in their signed config: the firmware's shortest (real nodes: 10-15 min)
NODE_INTERVAL_S = 60
#: a demo is in a hurry: the nodes are woken this often (their clock stays the host's, see hardware.virtual_node)
NODE_WAKE_S = 5.0
CROPS = ("maize", "rice", "cassava", "sorghum")


@dataclass(frozen=True)
class FarmPlan:
    """Farm number ``index`` (from 1) of the demo tenant."""

    index: int

    @property
    def farm_id(self) -> str:
        return f"farm-{self.index}"

    @property
    def name(self) -> str:
        return f"Demo farm {self.index}"

    @property
    def crop(self) -> str:
        return CROPS[(self.index - 1) % len(CROPS)]

    @property
    def gateway_id(self) -> str:
        return f"gw-farm-{self.index}"

    def device_id(self, name: str) -> str:
        return f"f{self.index}-{name}"

    @property
    def rtu_devices(self) -> list[tuple[str, str, int]]:
        return [(self.device_id(name), spec, unit) for name, spec, unit in RTU_DEVICES]

    @property
    def tcp_devices(self) -> list[tuple[str, str, int]]:
        return [(self.device_id(name), spec, unit) for name, spec, unit in TCP_DEVICES]

    @property
    def bus_devices(self) -> list[tuple[str, str]]:
        """(device id, spec) of every Modbus device the gateway reads."""
        return [(dev, spec) for dev, spec, _ in self.rtu_devices + self.tcp_devices]

    @property
    def node_ids(self) -> list[str]:
        return [self.device_id(f"node-{k}") for k in range(1, NODES_PER_FARM + 1)]


def farm_plans(farms: int) -> list[FarmPlan]:
    if farms < 1:
        raise ValueError(f"the demo needs at least one farm; got {farms}")
    return [FarmPlan(i) for i in range(1, farms + 1)]
