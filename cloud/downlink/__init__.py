"""Downlink to sensor nodes: signed config frames and OTA manifests, built and stored by the cloud and
published retained to each node's gateway (which relays them to the node unchanged)."""
