"""The research's own numbers, for reports to show beside what the data gives.

They are claims, not targets (../shared/research/README.md): reports print them so a
reader can compare, never to steer a result towards them. Each carries where it is from.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

SOURCE_000 = "research 000 (Algorithmic Rebalancing for Multi-Asset Leveraged Index Funds)"

# 000, "Rebalancing Algorithm": "Cost Control: Total implementation cost < 0.10% annually".
COST_PER_YEAR_CLAIM = 0.0010

# 000, "Stress Testing Results": scenario -> portfolio impact as printed there.
STRESS_CLAIMS: dict[str, str] = {
    "market_crash": "-18.2%",
    "rate_shock": "-15.4%",
    "tariff_escalation": "+8.3%",
    "liquidity_crisis": "2.8% TE",
}


def cost_section(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Implementation cost per year of every series (costs / mean equity / years) beside
    the research's claim."""
    return {
        "claim": f"< {COST_PER_YEAR_CLAIM:.2%} of the portfolio a year",
        "claim_value": COST_PER_YEAR_CLAIM,
        "source": SOURCE_000,
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
    table = Table(
        title=f"Implementation cost per year (the research claims {section['claim']})",
        title_justify="left",
    )
    table.add_column("series", style="bold")
    for header in ("costs", "% of mean equity a year", "x the claim"):
        table.add_column(header, justify="right")
    claim = section["claim_value"]
    for row in section["rows"]:
        costs = row["transaction_costs"]
        table.add_row(
            row["name"],
            "-" if costs is None else f"{costs:,.2f}",
            f"{row['cost_per_year'] * 100:.3f}",
            f"{row['cost_per_year'] / claim:.1f}",
        )
    return table
