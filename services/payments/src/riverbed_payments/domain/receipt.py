"""The receipt email a recorded payment asks for (the raw form of ``email.requested.v1``)."""

from __future__ import annotations

import re
from datetime import datetime

from riverbed_contracts.email import SendEmail
from riverbed_payments.domain.currency import format_amount

#: the contract's own loose check (something@domain.tld): the SMTP server is the judge
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def receipt_address(receipt_email: str | None, metadata: dict[str, str]) -> str | None:
    """Where the receipt goes: ``receipt_email``, else ``metadata["receipt_email"]``.

    The metadata key is there because the gateway passes a provider's metadata through
    but not (yet) its ``receipt_email``. An address that does not look like one means
    no receipt, never a failed payment.
    """
    address = receipt_email or metadata.get("receipt_email")
    if address and len(address) <= 254 and _ADDRESS.match(address):
        return address
    return None


def receipt(
    *,
    to: str,
    amount: int,
    currency: str,
    provider_payment_id: str,
    paid_at: datetime,
    description: str | None,
) -> SendEmail:
    total = format_amount(amount, currency)
    lines = [
        "Thank you for your payment.",
        "",
        f"Amount:    {total}",
        *([f"For:       {description}"] if description else []),
        f"Date:      {paid_at:%Y-%m-%d %H:%M} UTC",
        f"Reference: {provider_payment_id}",
        "",
        "Keep this email as your receipt.",
    ]
    return SendEmail(
        to=to,
        category="transactional",
        subject=f"Your receipt: {total}",
        text="\n".join(lines) + "\n",
    )
