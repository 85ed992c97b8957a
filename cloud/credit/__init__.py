"""The credit service: loan applications assessed on the farm's own data, decided by people.

``data`` builds the rural_credit input frames of farm-seasons from the store, every read of a farmer's
data through the consent gate (``cloud.consent.check.use_data``, purpose ``credit_assessment``);
``service`` runs an application's life (submit → assess → recommend; an officer decides; overrides with
maker-checker; appeals; cancel) over ``records`` (the SQL of migration 050); ``batch`` scores every farm of
a tenant at once; ``models`` deploys scorecards from a registry folder; ``shelves`` holds each tenant's
product shelf, policy and crop table.  The rules themselves live in ``rural_credit.assessment``: this
package stores, gates, audits and never decides anything the library does not.
"""
