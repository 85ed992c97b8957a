"""The words pages show for the codes the data holds: crops, metrics, audit actions, purposes, alert levels.

Each dict maps a code to its English words, marked with :func:`N_` so ``pybabel extract -k N_`` puts them in
the catalogue; templates translate them at render time (``_(words.CROPS[crop])``) and fall back to the
code itself for one this table does not know yet (:func:`word`).
"""

from __future__ import annotations

from collections.abc import Mapping


def N_(message: str) -> str:  # noqa: N802 - the conventional gettext no-op marker
    """Mark a message for extraction without translating it here."""
    return message


CROPS = {
    "banana": N_("banana"), "barley": N_("barley"), "beans": N_("beans"), "cabbage": N_("cabbage"),
    "cashew": N_("cashew"), "cassava": N_("cassava"), "chickpea": N_("chickpea"), "cocoa": N_("cocoa"),
    "coffee": N_("coffee"), "cotton": N_("cotton"), "cowpea": N_("cowpea"), "groundnut": N_("groundnut"),
    "kale": N_("kale"), "maize": N_("maize"), "mango": N_("mango"), "millet": N_("millet"), "onion": N_("onion"),
    "pigeon_pea": N_("pigeon pea"), "potato": N_("potato"), "pyrethrum": N_("pyrethrum"), "rice": N_("rice"),
    "sesame": N_("sesame"), "sorghum": N_("sorghum"), "soybean": N_("soybean"), "sugarcane": N_("sugarcane"),
    "sunflower": N_("sunflower"), "sweet_potato": N_("sweet potato"), "tea": N_("tea"), "tobacco": N_("tobacco"),
    "tomato": N_("tomato"), "wheat": N_("wheat"), "yam": N_("yam"), "pasture": N_("pasture"),
    "fallow": N_("fallow"), "mixed": N_("mixed crops"),
}

METRICS = {
    "soil_moisture": N_("soil moisture"), "soil_temperature": N_("soil temperature"),
    "air_temperature": N_("air temperature"), "air_humidity": N_("air humidity"), "temperature": N_("temperature"),
    "humidity": N_("humidity"), "rainfall": N_("rainfall"), "rain": N_("rain"), "battery": N_("battery"),
    "rssi": N_("signal strength"), "soil_ec": N_("soil salinity (EC)"), "soil_ph": N_("soil pH"),
    "soil_nitrogen": N_("soil nitrogen"), "soil_phosphorus": N_("soil phosphorus"),
    "soil_potassium": N_("soil potassium"), "wind_speed": N_("wind speed"), "water_level": N_("water level"),
}

ACTIONS = {
    "farmer.data_read": N_("read your farm data"), "audit.read": N_("looked at who used your data"),
    "data_use_refused": N_("was refused your data (no consent)"), "consent.granted": N_("recorded your consent"),
    "consent.revoked": N_("withdrew your consent"), "consent.pin_refused": N_("entered a wrong PIN for you"),
    "farmer.created": N_("registered you"), "farmer.updated": N_("changed your details"),
    "farm.created": N_("registered your farm"), "farm.updated": N_("changed your farm's details"),
    "field.created": N_("registered a field"), "field.updated": N_("changed a field"),
    "device.created": N_("installed a sensor"), "device.updated": N_("changed a sensor"),
    "terminal.assisted": N_("helped you at the service point"),
}

PURPOSES = {
    "credit_assessment": N_("assessing a loan"), "insurance": N_("crop insurance"), "advice": N_("farming advice"),
    "service_metrics": N_("improving the service point"),
}

DATA_SCOPES = {
    "soil": N_("soil readings"), "weather": N_("weather readings"), "yields": N_("harvest records"),
    "registry": N_("farm and field records"), "usage": N_("how you use this terminal"),
}

ROLES = {
    "farmer": N_("farmer"), "clerk": N_("service-point clerk"), "technician": N_("technician"),
    "credit_officer": N_("credit officer"), "ops": N_("operations"), "tenant_admin": N_("administrator"),
    "platform_admin": N_("platform administrator"),
}

SEVERITIES = {"info": N_("note"), "warning": N_("warning"), "critical": N_("urgent")}

CONSENT_STATUS = {"active": N_("active"), "expired": N_("expired"), "revoked": N_("withdrawn")}


#: units as the data holds them (UCUM codes) -> as people write them
UNITS = {"Cel": "°C", "Cel/h": "°C/h", "%": "%", "mV": "mV", "V": "V", "dBm": "dBm", "mm": "mm", "uS/cm": "µS/cm"}


def word(table: Mapping[str, str], code: str | None) -> str:
    """The English words of ``code`` (to be translated by the caller), or the code itself."""
    if code is None:
        return ""
    return table.get(code, code.replace("_", " "))
