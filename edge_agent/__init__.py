"""The village gateway agent: polls field buses, takes node messages, keeps a durable outbox,
forwards signed batches to the cloud and reports its own health.

Layout, along the data flow: ``bus/`` (Modbus framing, transports, read planning, one scheduler
per physical bus), ``intake`` (node messages from the local broker), ``outbox`` (SQLite WAL),
``uplink`` (MQTT to the cloud, commit receipts), ``health``, ``agent`` (wires them), ``config``;
for the sensor nodes, ``node_relay`` (config and OTA from the cloud), ``ota_cache`` and
``ota_server`` (OTA files by SHA-256 over HTTP), ``time_server`` (SNTP), ``listeners``.
"""

__version__ = "0.1.0"
