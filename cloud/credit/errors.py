"""What the credit service refuses with; the API answers each with its ``status``."""

from __future__ import annotations


class CreditError(Exception):
    """A credit operation refused; the message says why."""

    status = 400


class CreditNotFound(CreditError):
    """No such application, farm or decision within the caller's reach (also when it exists beyond it)."""

    status = 404


class CreditConflict(CreditError):
    """The application's state does not allow this step (decided already, override pending, ...)."""

    status = 409


class CreditForbidden(CreditError):
    """A rule forbids this caller this step: the maker of an override checking it, a farmer's other farms."""

    status = 403


class CreditInvalid(CreditError):
    """A request or a document (shelf, policy, model) that is not valid; the message names the field."""

    status = 422


class NotDeployed(CreditError):
    """The tenant has no champion model or no product shelf yet: an administrator deploys them first."""

    status = 409
