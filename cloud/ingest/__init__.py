"""The ingest: gateways' signed uplink batches from MQTT into ``ft.readings``, exactly once in effect.

``worker`` (the MQTT session and the threads), ``handler`` (one message: verify, parse, check),
``validate`` (one record), ``commit`` (one transaction: the duplicate rule, rows, dead letters),
``counters`` (what a worker did), ``directory`` (cached registry lookups).  The SQL lives in
:mod:`cloud.store.writes`.
"""
