"""The one error every driver raises for a reading it cannot trust."""


class DriverError(Exception):
    """A sensor did not answer, or answered with bytes that fail their checks.  ``reason`` is a short code."""

    def __init__(self, reason, detail=""):
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail
