"""Fleet operations: presence and health of gateways and devices, alerts, webhooks, OTA campaigns, backups."""
