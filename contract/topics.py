"""The MQTT topic scheme, in one place (runs under MicroPython too).  See docs/message-format.md.

Cloud broker (gateway <-> cloud)::

    ft/v1/<tenant>/gw/<gateway>/up          gateway -> cloud   signed batch frames (QoS 1)
    ft/v1/<tenant>/gw/<gateway>/receipt     cloud -> gateway   commit receipts (QoS 1)
    ft/v1/<tenant>/gw/<gateway>/config      cloud -> gateway   signed config (retained)
    ft/v1/<tenant>/gw/<gateway>/health      gateway -> cloud   signed heartbeat (QoS 0)
    ft/v1/<tenant>/gw/<gateway>/state       gateway -> cloud   birth / last will (retained)
    ft/v1/<tenant>/gw/<gateway>/update      cloud -> gateway   signed agent update (retained; contract/agent_update.py)
    ft/v1/<tenant>/gw/<gateway>/node/<node>/config   cloud -> gateway   a node's config frame, signed by
                                                     the cloud with the NODE's key (retained; relayed as is)
    ft/v1/<tenant>/gw/<gateway>/node/<node>/ota      cloud -> gateway   a node's OTA manifest frame, signed
                                                     with the NODE's key (retained; relayed once the files
                                                     are cached)
    ft/v1/<tenant>/gw/<gateway>/file/<sha256>        cloud -> gateway   one OTA file's bytes (QoS 1, retained
                                                     until the manifests naming it are gone); the gateway
                                                     keeps it only if its SHA-256 matches the topic

Gateway broker (node <-> gateway)::

    ft/v1/node/<node>/up        node -> gateway    signed telemetry frames (QoS 1)
    ft/v1/node/<node>/state     node -> gateway    birth / last will (retained)
    ft/v1/node/<node>/config    gateway -> node    config signed by the cloud (retained)
    ft/v1/node/<node>/ota       gateway -> node    OTA manifest signed by the cloud (retained)
    ft/v1/node/<node>/awake     gateway -> node    retained "stay awake" flag for maintenance

Identifiers are 1-64 characters of ``A-Z a-z 0-9 - _ .``: no MQTT wildcard or separator can
appear in them.
"""

ROOT = "ft/v1"
INGEST_SHARE_GROUP = "ingest"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."


def valid_id(ident):
    """True when ``ident`` may be used as a tenant, gateway or node id."""
    if not isinstance(ident, str) or not 1 <= len(ident) <= 64:
        return False
    return all(c in _ID_CHARS for c in ident)


def _check(*idents):
    for ident in idents:
        if not valid_id(ident):
            raise ValueError(f"invalid identifier for a topic: {ident!r}")


def gateway(tenant, gw, leaf):
    _check(tenant, gw)
    return f"{ROOT}/{tenant}/gw/{gw}/{leaf}"


def node(node_id, leaf):
    _check(node_id)
    return f"{ROOT}/node/{node_id}/{leaf}"


def _is_sha256(text):
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def gateway_node(tenant, gw, node_id, leaf):
    """A cloud -> gateway topic about one of the gateway's nodes (``config`` or ``ota``)."""
    _check(tenant, gw, node_id)
    return f"{ROOT}/{tenant}/gw/{gw}/node/{node_id}/{leaf}"


def gateway_file(tenant, gw, sha256_hex):
    """The topic carrying one OTA file to a gateway, named by the file's SHA-256 (64 lower-case hex)."""
    _check(tenant, gw)
    if not _is_sha256(sha256_hex):
        raise ValueError(f"not a SHA-256 in hex: {sha256_hex!r}")
    return f"{ROOT}/{tenant}/gw/{gw}/file/{sha256_hex}"


def gateway_downlink_filter(tenant, gw):
    """What a gateway subscribes to on the cloud broker for its nodes: their config, OTA and files."""
    _check(tenant, gw)
    return [f"{ROOT}/{tenant}/gw/{gw}/node/+/+", f"{ROOT}/{tenant}/gw/{gw}/file/+"]


def parse_gateway_downlink(topic):
    """``(tenant, gw, kind, name, leaf)`` for a node or file downlink topic, or raise ValueError.

    ``kind`` is ``"node"`` (name = node id, leaf = ``config``/``ota``) or ``"file"`` (name = SHA-256, leaf = "").
    """
    parts = topic.split("/")
    if len(parts) >= 7 and parts[0] + "/" + parts[1] == ROOT and parts[3] == "gw":
        _check(parts[2], parts[4])
        if parts[5] == "node" and len(parts) == 8 and parts[7] in ("config", "ota"):
            _check(parts[6])
            return parts[2], parts[4], "node", parts[6], parts[7]
        if parts[5] == "file" and len(parts) == 7 and _is_sha256(parts[6]):
            return parts[2], parts[4], "file", parts[6], ""
    raise ValueError(f"not a gateway downlink topic: {topic!r}")


def gateway_uplink_filter(shared=True):
    """Subscription filter for ingest workers: all gateways' uplinks, shared between workers."""
    f = ROOT + "/+/gw/+/up"
    return f"$share/{INGEST_SHARE_GROUP}/{f}" if shared else f


#: what the cloud's fleet service reads: every gateway's heartbeats and births / wills (not shared: retained
#: births and wills are not sent to shared subscriptions)
GATEWAY_FLEET_FILTERS = (ROOT + "/+/gw/+/health", ROOT + "/+/gw/+/state")
NODE_UPLINK_FILTER = ROOT + "/node/+/up"
NODE_STATE_FILTER = ROOT + "/node/+/state"


def parse_node_topic(topic):
    """Return (node_id, leaf) for a node topic, or raise ValueError."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] + "/" + parts[1] != ROOT or parts[2] != "node":
        raise ValueError(f"not a node topic: {topic!r}")
    _check(parts[3])
    return parts[3], parts[4]


def parse_gateway_topic(topic):
    """Return (tenant, gateway_id, leaf) for a gateway topic, or raise ValueError."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] + "/" + parts[1] != ROOT or parts[3] != "gw":
        raise ValueError(f"not a gateway topic: {topic!r}")
    _check(parts[2], parts[4])
    return parts[2], parts[4], parts[5]
