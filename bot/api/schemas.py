"""Request and response models of the allocation API (they are its OpenAPI schema).

Requests are strict: unknown fields, strings where numbers belong, negative quantities
and non-finite numbers are refused with a 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from bot.config import parse_iso_date

MAX_AMOUNT = 1e12  # no client holds more shares or dollars than this
Ticker = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9.]{0,9}$")]
Amount = Annotated[float, Field(ge=0.0, le=MAX_AMOUNT, allow_inf_nan=False)]


def _iso_date(value: Any) -> Any:
    if isinstance(value, str):
        return parse_iso_date(value)
    raise ValueError("expected a date YYYY-MM-DD")


# A date in the query string or body: YYYY-MM-DD and a real calendar day only (pydantic's
# own date type also takes Unix timestamps and other forms, which nobody means here).
IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PlanRequest(_Strict):
    """A client's portfolio to move to a profile's allocation."""

    profile: str = Field(description="a profile name from GET /v1/profiles")
    cash: Amount = Field(description="the client's cash in dollars")
    holdings: dict[Ticker, Amount] = Field(
        default_factory=dict,
        description="shares held per symbol (fractions allowed); only the profile's ETFs",
        examples=[{"SPY": 12.5, "BND": 40}],
        # a key that is not a ticker is refused: say so (pydantic lists the pattern only)
        json_schema_extra={"additionalProperties": False},
    )
    date: IsoDate | None = Field(
        default=None, description="decide at this day's close and price the plan on it, YYYY-MM-DD "
                                  "(default: the decision in force, priced on the latest closes)"
    )


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error: what went wrong in one line, and per field for a 422."""

    error: str
    message: str
    fields: list[ErrorField] | None = None


class UniverseEntry(BaseModel):
    symbol: str
    role: str
    description: str
    static_weight: float


class ProfileOut(BaseModel):
    name: str
    strategy: str
    config: str
    config_hash: str
    intended_srri: list[int] = Field(description="the MiFID II risk class range the profile is meant for (SRRI 1-7)")
    priips_rhp_years: float
    signal_weights: dict[str, float]
    total_band: list[float]
    max_weight: float
    schedule: str
    universe: list[UniverseEntry]
    data: str
    synthetic: bool
    latest_day: str


class ProfilesOut(BaseModel):
    profiles: list[ProfileOut]


class SignalOut(BaseModel):
    z: float | None = Field(description="standardized across the profile's ETFs")
    raw: float | None


class AssetAllocation(BaseModel):
    symbol: str
    role: str
    description: str
    weight: float = Field(description="the target weight of equity (the rest of 100% is cash)")
    lp_weight: float
    static_weight: float
    price: float | None
    tradable: bool
    ranked: bool
    score: float | None
    rank: int | None
    signals: dict[str, SignalOut]
    inputs: dict[str, float | int | None]
    lp_reason: str
    stop_price: float | None
    reasons: list[str] = Field(description="the reason lines the trade log records for this target")


class TotalOut(BaseModel):
    band: list[float]
    drawn: float
    invested: float
    cash: float
    kept_in_cash_from_draw: float


class HoldingWindowOut(BaseModel):
    year: int
    month: int
    turn_of_month: bool


class RiskEventOut(BaseModel):
    rule: str
    action: str
    symbol: str | None


class AllocationOut(BaseModel):
    profile: str
    strategy: str
    day: str = Field(description="the trading day whose close the decision is taken at")
    requested_date: str | None
    scheduled_rebalance_day: bool | None
    method: str
    regime: str | None = Field(description="the market regime, for a config whose guard uses it")
    signal_weights: dict[str, float]
    total: TotalOut
    holding_window: HoldingWindowOut
    assets: list[AssetAllocation]
    risk_events: list[RiskEventOut]
    config_hash: str
    data: str
    synthetic: bool


class PlannedOrder(BaseModel):
    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: float
    reference_price: float
    notional: float
    reason: str


class PlanOut(BaseModel):
    profile: str
    day: str = Field(description="the decision's day (without a date: the one in force)")
    priced_on: str = Field(description="the closes the holdings and orders are valued at "
                                       "(without a date: the latest)")
    equity: float = Field(description="cash plus the holdings at the priced_on closes")
    targets: dict[str, float]
    orders: list[PlannedOrder] = Field(description="sells first, then buys, as the engine sends them")
    cash_after: float = Field(description="cash left once every order fills at its reference price")


class SuitabilityOut(BaseModel):
    """`bot suitability`'s report of the profile: its strategy and its static example mix."""

    profile: str
    config: str
    config_hash: str
    code_version: str
    data_label: str
    strategy: dict[str, Any]
    static_allocation: dict[str, Any]


class EquityOut(BaseModel):
    day: str
    run_id: int
    equity: str
    cash: str
    positions_value: str
    drawdown: float


class HoldingOut(BaseModel):
    symbol: str
    quantity: str
    price: str
    market_value: str
    weight: float | None


class PositionsOut(BaseModel):
    day: str
    run_id: int
    holdings: list[HoldingOut]


class AccountOrder(BaseModel):
    client_order_id: str
    symbol: str
    side: str
    quantity: str
    notional: str | None
    reference_price: str
    status: str
    filled_quantity: str
    average_price: str | None
    reason: str
    submitted_at: str


class RebalanceOut(BaseModel):
    rebalance_id: str
    run_id: int
    submitted_at: str
    orders: list[AccountOrder]


class AccountOut(BaseModel):
    """Money and quantities are exact decimals, written as strings."""

    id: int
    broker_account_id: str
    profile: str
    status: str
    suitability: dict[str, Any] | None
    created_at: str
    closed_at: str | None
    equity: EquityOut | None
    positions: PositionsOut | None
    last_rebalance: RebalanceOut | None
    open_orders: int


class HealthOut(BaseModel):
    status: Literal["ok"]
    profiles: int
