"""The audit log: who did what, to which record, when, from where, hash-chained (migration 042).

:mod:`cloud.audit.log` writes and reads entries, :mod:`cloud.audit.chain` recomputes and verifies the chains,
:mod:`cloud.audit.retention` is the owner's archival procedure.
"""
