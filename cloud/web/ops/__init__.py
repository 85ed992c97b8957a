"""The ops console (/ops): the fleet of gateways and devices, each one's health, messages and configuration."""
