"""ISO 4217: which currencies a posting may carry, and how many minor units each has.

The contract only checks the shape (three uppercase letters); the ledger accepts a
code only if it is an active ISO 4217 currency with a minor unit (so not ``XAU``,
``XDR`` or ``XXX``). Exponents are ISO's: 0 for JPY, 3 for KWD, 4 for CLF.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

from riverbed.errors import RiverbedError

_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

#: active ISO 4217 code -> number of decimal places of its minor unit
EXPONENTS: Final[dict[str, int]] = {
    code: exponent
    for exponent, codes in ((0, _EXPONENT_0), (2, _EXPONENT_2), (3, _EXPONENT_3), (4, _EXPONENT_4))
    for code in codes.split()
}

_DECIMAL = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


class InvalidAmount(RiverbedError, ValueError):
    """An amount or currency the ledger refuses (permanent: retrying cannot help)."""


def check_currency(code: str) -> str:
    """``code`` if it is an active ISO 4217 currency with a minor unit, else InvalidAmount."""
    if code not in EXPONENTS:
        raise InvalidAmount(
            f"currency {code!r} is not an active ISO 4217 currency with a minor unit "
            "(give an uppercase code such as EUR, USD or JPY)"
        )
    return code


def exponent(code: str) -> int:
    return EXPONENTS[check_currency(code)]


def to_minor_units(text: str, currency: str) -> int:
    """A decimal amount in major units (``"19.99"``) as integer minor units (``1999``).

    Refuses more decimals than the currency has (``"19.999"`` EUR, ``"5.5"`` JPY):
    rounding money silently is how ledgers drift.
    """
    places = exponent(currency)
    cleaned = text.strip()  # no thousands separators: "1,999" is ambiguous across locales
    if not _DECIMAL.match(cleaned):
        raise InvalidAmount(f"{text!r} is not a decimal amount such as 19.99 or -5.00")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern already refused it
        raise InvalidAmount(f"{text!r} is not a decimal amount") from None
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise InvalidAmount(f"{text!r} has more decimal places than {currency} has ({places})")
    return int(scaled)


def format_amount(minor: int, currency: str) -> str:
    """``1999, "EUR"`` -> ``"19.99 EUR"`` (for humans: receipts, messages)."""
    places = exponent(currency)
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 10**places) if places else (abs(minor), 0)
    fraction = f".{cents:0{places}d}" if places else ""
    return f"{sign}{units:,}{fraction} {currency}"
