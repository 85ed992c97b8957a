"""Test helpers shared by several test modules: private brokers and a cloud peer."""
