"""``network`` on the virtual ESP32: the station (and a token access point) interface.

The station joins a network the host's environment lists in range (``wifi``: ssid, optional
password, rssi) after a short association; an SSID not in range ends in STAT_NO_AP_FOUND, a wrong
password in STAT_WRONG_PASSWORD, as on the chip.  The MAC is the board's ``machine.unique_id()``
(the access point's is one higher).  The association survives a soft reset, not a hard one.
"""

import json

import _board
import machine

STA_IF, AP_IF = 0, 1
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD, STAT_BEACON_TIMEOUT = 201, 202, 200
STAT_ASSOC_FAIL, STAT_HANDSHAKE_TIMEOUT = 203, 204
AUTH_OPEN, AUTH_WEP, AUTH_WPA_PSK, AUTH_WPA2_PSK, AUTH_WPA_WPA2_PSK = 0, 1, 2, 3, 4
PM_NONE, PM_PERFORMANCE, PM_POWERSAVE = 0, 1, 2
_GATEWAY = "192.168.4.1"
_settings = {"hostname": "mpy-esp32", "country": "XX"}


def hostname(name=None):
    if name is None:
        return _settings["hostname"]
    _settings["hostname"] = name


def country(code=None):
    if code is None:
        return _settings["country"]
    _settings["country"] = code


def _call(op, arg=None):
    answer = json.loads(_board.wifi(op, None if arg is None else json.dumps(arg)))
    if "errno" in answer:
        raise OSError("Wifi Not Started" if op == "connect" else answer["errno"])
    return answer


class WLAN:
    IF_STA, IF_AP = STA_IF, AP_IF
    PM_NONE, PM_PERFORMANCE, PM_POWERSAVE = PM_NONE, PM_PERFORMANCE, PM_POWERSAVE

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        self._ap_active = False
        self._last = (None, None)

    def active(self, is_active=None):
        if self._if == AP_IF:
            if is_active is not None:
                self._ap_active = bool(is_active)
            return self._ap_active
        return _call("active", None if is_active is None else bool(is_active))["active"]

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("STA required")
        if ssid is None:
            ssid, key = self._last
        self._last = (ssid, key)
        _call("connect", {"ssid": ssid, "password": key})

    def disconnect(self):
        _call("disconnect")

    def isconnected(self):
        if self._if == AP_IF:
            return False
        return _call("status")["status"] == STAT_GOT_IP

    def status(self, param=None):
        if self._if == AP_IF:
            if param == "stations":
                return []
            return STAT_IDLE
        state = _call("status")
        if param is None:
            return state["status"]
        if param == "rssi":
            if state["rssi"] is None:
                raise OSError(-1)  # not connected
            return state["rssi"]
        raise ValueError("unknown status param")

    def _address(self):
        mac = machine.unique_id()
        return "192.168.4." + str(100 + mac[5] % 100)

    def ifconfig(self, config=None):
        if config is not None:
            raise OSError(1)  # static addresses are not supported on this board
        if self._if == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        if not self.isconnected():
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        return (self._address(), "255.255.255.0", _GATEWAY, _GATEWAY)

    def ipconfig(self, *args, **kwargs):
        addr, mask, gateway, _dns = self.ifconfig()
        values = {"addr4": (addr, mask), "gw4": gateway, "dhcp4": True}
        if kwargs:
            return None
        if len(args) != 1 or args[0] not in values:
            raise ValueError("unexpected key")
        return values[args[0]]

    def config(self, *args, **kwargs):
        if kwargs:
            for name, value in kwargs.items():
                if name in ("hostname", "dhcp_hostname"):
                    _settings["hostname"] = value
                elif name not in ("pm", "txpower", "reconnects", "channel", "ssid", "essid", "key",
                                  "password", "security", "authmode", "max_clients", "protocol"):
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        name = args[0]
        if name == "mac":
            mac = bytearray(machine.unique_id())
            if self._if == AP_IF:
                mac[5] = (mac[5] + 1) & 0xFF
            return bytes(mac)
        if name in ("ssid", "essid"):
            return _call("status")["ssid"] or ""
        if name in ("hostname", "dhcp_hostname"):
            return _settings["hostname"]
        if name == "txpower":
            return 20
        if name == "channel":
            return 1
        if name == "pm":
            return PM_PERFORMANCE
        if name == "reconnects":
            return -1
        raise ValueError("unknown config param")

    def scan(self):
        """``(ssid, bssid, channel, RSSI, security, hidden)`` for each network in range."""
        found = []
        for i, net in enumerate(_call("scan")["networks"]):
            bssid = bytes([0x02, 0x00, 0x00, 0x00, 0x00, (i + 1) & 0xFF])
            security = AUTH_WPA2_PSK if net.get("password") else AUTH_OPEN
            found.append((net["ssid"].encode(), bssid, 1 + i % 11, net.get("rssi", -60), security, False))
        return found
