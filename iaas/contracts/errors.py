"""Domain errors the contexts raise across their boundaries.

Each carries a stable ``code``; the API maps codes to HTTP statuses in one place.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"
    default_detail = "The request could not be carried out."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        # Work to do once the refused transaction has rolled back (e.g. ask other
        # contexts to release idle allowance): run by the outermost transaction owner.
        self.after_rollback: list = []
        super().__init__(self.detail)


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    default_detail = "The wallet's available balance does not cover the price."

    def __init__(self, detail: str | None = None, *, release_requested: bool = False) -> None:
        self.release_requested = release_requested
        if detail is None and release_requested:
            detail = (
                "The wallet's available balance does not cover the price. Funds held by "
                "another service are being released; retry in a few seconds."
            )
        super().__init__(detail)


class WalletNotFound(DomainError):
    code = "not_found"
    default_detail = "No such wallet."


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"
    default_detail = "The price's currency is not the wallet's currency."


class WalletNotActive(DomainError):
    code = "wallet_not_active"
    default_detail = "The wallet is frozen or closed."


class WalletExists(DomainError):
    code = "wallet_exists"
    default_detail = "You already have a wallet in that currency."


class AdjustmentRefused(DomainError):
    code = "adjustment_refused"
    default_detail = "The adjustment would take money that is reserved or not there."


class RefundRefused(DomainError):
    code = "refund_refused"
    default_detail = "The refund is not possible."


class NotFound(DomainError):
    code = "not_found"
    default_detail = "Not found."


class PlanNotOnSale(NotFound):
    """The plan named is not in the catalog, or no longer offered: found out by the
    statement that sells from it. The API answers it as the ``plan`` field's 400."""

    def __init__(self, plan_id: str) -> None:
        super().__init__(f"No such plan: {plan_id}.")
        self.plan_id = plan_id


class DomainTaken(DomainError):
    code = "domain_taken"
    default_detail = "Another active subscription already has that domain."


class InvalidState(DomainError):
    code = "invalid_state"
    default_detail = "The object is not in a state that allows this."


class ServiceBusy(DomainError):
    """A lock could not be had after bounded retries; nothing was done."""

    code = "service_unavailable"
    default_detail = "The service is busy; nothing was done. Retry shortly."


class PaymentProviderUnavailable(ServiceBusy):
    """The payment provider could not be reached or failed; what we committed before
    calling it (a pending top-up, a pending payment method) stays, and the same call
    again (the same Idempotency-Key) finishes it."""

    default_detail = (
        "The payment provider could not be reached. Nothing was charged; retry with the same "
        "Idempotency-Key to carry on with the same payment."
    )


class PaymentMethodsUnavailable(DomainError):
    """The configured payment provider cannot save payment methods or charge them."""

    code = "payment_methods_unavailable"
    default_detail = "The configured payment provider does not support saved payment methods."
