"""The store: PostgreSQL or TimescaleDB behind one set of modules.

``migrate`` builds the schema (numbered SQL files, a variant per backend where they differ);
``partitions``, ``rollups`` and ``retention`` keep the plain-PostgreSQL layout in shape (on
TimescaleDB the extension's policies do the same work); ``series`` answers time-series queries
identically on both; ``maintenance`` is the loop that runs the upkeep.  ``tenancy`` applies
row-level security and the services' privileges after every migration; ``scope`` sets whose rows
a transaction sees.  All SQL lives here.
"""
