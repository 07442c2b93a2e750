"""The research's own numbers, for reports to show beside what the data gives.

They are claims, not targets (../shared/research/README.md): reports print them so a
reader can compare, never to steer a result towards them. Each carries where it is from.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

SOURCE_000 = "research 000 (Algorithmic Rebalancing for Multi-Asset Leveraged Index Funds)"
SOURCE_002 = "research 002 (Adaptive Factor-Based ETF Allocation Model for Robo-Advisory Platforms)"

# 000, "Rebalancing Algorithm": "Cost Control: Total implementation cost < 0.10% annually".
COST_PER_YEAR_CLAIM = 0.0010

# 000, "Stress Testing Results": scenario -> portfolio impact as printed there.
STRESS_CLAIMS: dict[str, str] = {
    "market_crash": "-18.2%",
    "rate_shock": "-15.4%",
    "tariff_escalation": "+8.3%",
    "liquidity_crisis": "2.8% TE",
}


def cost_claim(strategy_kind: str) -> tuple[float, str] | None:
    """The research's cost claim for a strategy kind, with its source. Only 000 (the
    leverage strategy) makes one; 002 (the robo factor model) states no cost figure, so a
    factor run is shown without a claim to be measured against."""
    return (COST_PER_YEAR_CLAIM, SOURCE_000) if strategy_kind == "leverage" else None


def cost_section(summary: list[dict[str, Any]], strategy_kind: str = "leverage") -> dict[str, Any]:
    """Implementation cost per year of every series (costs / mean equity / years) beside
    the claim of the research the strategy implements, if it makes one."""
    claim = cost_claim(strategy_kind)
    return {
        "claim": None if claim is None else f"< {claim[0]:.2%} of the portfolio a year",
        "claim_value": None if claim is None else claim[0],
        "source": SOURCE_002 if claim is None else claim[1],
        "rows": [
            {
                "name": row["name"],
                "transaction_costs": row.get("transaction_costs"),
                "cost_per_year": row.get("cost_per_year"),
            }
            for row in summary
            if row.get("cost_per_year") is not None
        ],
    }


def cost_table(report: dict[str, Any]) -> Table | None:
    section = report.get("implementation_cost")
    if not section or not section.get("rows"):
        return None
    claim = section.get("claim_value")
    if claim is None:  # the robo paper: no figure to compare with
        table = Table(title="Implementation cost per year", title_justify="left",
                      caption="research 002 states no cost figure", caption_justify="left")
    else:
        table = Table(title=f"Implementation cost per year (the research claims {section['claim']})",
                      title_justify="left")
    table.add_column("series", style="bold")
    headers = ("costs", "% of mean equity a year") + (() if claim is None else ("x the claim",))
    for header in headers:
        table.add_column(header, justify="right")
    for row in section["rows"]:
        costs = row["transaction_costs"]
        cells = [
            row["name"],
            "-" if costs is None else f"{costs:,.2f}",
            f"{row['cost_per_year'] * 100:.3f}",
        ]
        if claim is not None:
            cells.append(f"{row['cost_per_year'] / claim:.1f}")
        table.add_row(*cells)
    return table
