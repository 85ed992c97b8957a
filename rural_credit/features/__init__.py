"""Farm-season features for credit: agronomy from the rollups, registry and application, and their catalogue.

``build.build_features`` is the entry point; ``catalogue`` documents every column it returns.
"""
