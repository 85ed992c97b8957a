"""Loan assessment: products, limits, decisions with reasons, fairness, and the one-call pipeline.

``pipeline.assess`` takes a farm-season's data (readings or rollups with trust, registry,
application) to a recommendation an officer can act on; ``pipeline.assess_batch`` does every farm of
a tenant at once.  ``products``, ``limit`` and ``decision`` hold the rules (their thresholds and
tables are data files under ``shelves/``, ``policies/`` and ``data/``); ``review`` models officer
overrides (maker-checker) and appeals; ``notice`` writes the adverse-action notice in English and
Chinese from the one reason catalogue (``reasons``); ``fairness`` reports approval rates and AUC by
group.  Like the rest of rural_credit it never imports ``cloud``.
"""
