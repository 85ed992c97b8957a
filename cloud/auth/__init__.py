"""Who is calling and what they may do: accounts, sessions, API keys, scopes, rate limits, lockout, CSRF.

:class:`cloud.auth.principal.Principal` is what every route receives (``cloud.api.deps.PrincipalDep``);
the other modules are the pieces that produce it and keep attackers slow.  SQL lives next to the logic it
serves, one module per concern; the tables are in ``cloud/store/migrations/041_accounts.sql``.
"""
