"""Money and terms as two companies agree on them (SPEC section 12): exact decimals with at most two
places, written as strings with two ("95.00"), never floats; an ISO 4217 currency. `TermsIn` is what a
lead's user may send (a third decimal place, a negative rate or an unknown currency is a 422 naming it),
`TermsOut` what both partners answer and store. On Kafka the terms still travel as message version 1
wrote them (numbers) until the release after every reader knows the decimal version (docs/architecture.md,
"Changing a message")."""
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from shared.contracts.limits import MAX_AMOUNT
from shared.contracts.messages import Terms

# ISO 4217's active codes (2026), as a lead may price in them.
CURRENCIES = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD
HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
""".split())


def _currency(code: str) -> str:
    if code not in CURRENCIES:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code, such as USD or EUR")
    return code


def two_places(value: Decimal) -> str:
    return f"{value:.2f}"


CENT = Decimal("0.01")
Currency = Annotated[str, AfterValidator(_currency)]
Money = Annotated[Decimal, Field(ge=0, lt=MAX_AMOUNT, decimal_places=2, allow_inf_nan=False),
                  PlainSerializer(two_places, return_type=str, when_used="json")]
Hours = Annotated[Decimal, Field(gt=0, lt=MAX_AMOUNT, decimal_places=2, allow_inf_nan=False),
                  PlainSerializer(two_places, return_type=str, when_used="json")]
MONEY_EXAMPLE = {"rate_type": "hourly", "rate": "95.00", "authorized_hours": "6.00", "currency": "USD"}


class TermsIn(BaseModel):
    """Terms as a lead's user writes them: amounts as strings or numbers, at most two decimal places."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [MONEY_EXAMPLE]})
    rate_type: Literal["hourly", "flat"]
    rate: Money = Field(description="per hour (hourly) or for the whole work (flat)")
    authorized_hours: Hours | None = None
    authorized_charge: Money | None = None
    currency: Currency | None = Field(None, description="ISO 4217; the lead's LEAD_CURRENCY when absent")


class TermsOut(BaseModel):
    """Terms as both partners answer and store them: every amount a string with two places."""

    rate_type: Literal["hourly", "flat"]
    rate: Annotated[Decimal, PlainSerializer(two_places, return_type=str, when_used="json")]
    authorized_hours: Annotated[Decimal, PlainSerializer(two_places, return_type=str, when_used="json")] | None = None
    authorized_charge: Annotated[Decimal, PlainSerializer(two_places, return_type=str, when_used="json")] | None = None
    currency: str | None = Field(None, description="ISO 4217; null: the lead did not state one (release 1.0.0)")

    @model_validator(mode="before")
    @classmethod
    def _exact(cls, terms: Any) -> Any:
        """Whichever way the amounts arrived (a message of version 1 carries numbers): exact, to the cent."""
        if isinstance(terms, dict):
            return {k: (Decimal(str(v)).quantize(CENT, rounding=ROUND_HALF_UP) if k in AMOUNTS and v is not None else v)
                    for k, v in terms.items()}
        return terms

    @classmethod
    def stored(cls, terms: dict[str, Any] | None) -> dict[str, Any] | None:
        return cls.model_validate(terms).model_dump(mode="json") if terms else None


AMOUNTS = ("rate", "authorized_hours", "authorized_charge")


def on_the_wire(terms: dict[str, Any] | None) -> Terms | None:
    """Stored terms as message version 1 carries them (numbers; exact for two places)."""
    if not terms:
        return None
    return Terms.model_validate({k: (float(Decimal(str(v))) if k in AMOUNTS and v is not None else v)
                                 for k, v in terms.items()})
