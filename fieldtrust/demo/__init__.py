"""The demo: the whole path on one machine, from simulated field devices to rows in PostgreSQL.

Virtual farms (Modbus sensors on a virtual serial port and Modbus TCP, signed sensor nodes,
gateway agents) send to a cloud stack (embedded PostgreSQL or ``FIELDTRUST_DATABASE_URL``, a
private broker or ``FIELDTRUST_MQTT_URL``, ingest workers, the API, store upkeep); at the end the
run is accounted for from the database.  ``plan`` names what is built, ``registration`` puts it in
the registry, ``farm`` and ``stack`` run the two sides, ``account`` counts, ``report`` shows,
``run`` holds it together.
"""

from fieldtrust.demo.account import Account
from fieldtrust.demo.registration import DemoError
from fieldtrust.demo.run import DEMO_DIR_ENV, DemoOptions, default_data_dir, run_demo

__all__ = ["DEMO_DIR_ENV", "Account", "DemoError", "DemoOptions", "default_data_dir", "run_demo"]
