"""Metering for SaaS billing: usage per tenant and month, plans with quotas, the usage report.

Ingest meters are counted in the ingest's own commit transaction (:mod:`cloud.metering.ingest`), API
meters by the API's buffered counter (:mod:`cloud.metering.api_calls`); plans and the month a plan
covers live in :mod:`cloud.metering.plans`, the report with quotas and overage in
:mod:`cloud.metering.usage`, soft and hard limits in :mod:`cloud.metering.quotas`.
"""
