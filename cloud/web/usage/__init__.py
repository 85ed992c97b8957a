"""The terminal's usage events (page views, clicks, time on page), recorded only with the farmer's consent for
service metrics, and the tenant's service metrics built from them (issue 7, migration 048)."""
