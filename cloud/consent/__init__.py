"""Farmers' consents (migration 043): what data may be used for which purpose, until when, confirmed with the
farmer's PIN.  :mod:`.texts` holds the words shown, :mod:`.store` grants, revokes and lists, :mod:`.check` is the
gate every use of a farmer's data by staff or partners passes (``require_consent``)."""
