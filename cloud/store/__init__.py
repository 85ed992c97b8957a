"""The store: PostgreSQL or TimescaleDB behind one set of modules.

``migrate`` builds the schema (numbered SQL files, a variant per backend where they differ);
``partitions``, ``rollups`` and ``retention`` keep the plain-PostgreSQL layout in shape (on
TimescaleDB the extension's policies do the same work); ``series`` answers time-series queries
identically on both; ``maintenance`` is the loop that runs the upkeep.  All SQL lives here.
"""
