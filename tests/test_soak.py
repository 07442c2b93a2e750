"""The short fault soak of CI: the live daemon's code in a child process, five sessions
against the fake Alpaca and FRED with random faults, SIGKILLed at three points of a
rebalance (a held sell POST, the poll that releases the buys, the close job) and
restarted; every invariant must hold and every session recover. The full soak and the
crash matrix: `python benchmarks/soak.py` (tests/soak/)."""

from __future__ import annotations

import sqlalchemy as sa

from tests.soak.checks import check, read_ledger
from tests.soak.runs import LEGEND, details, short_run, table


def test_five_sessions_with_faults_and_three_kills_lose_nothing(tmp_path):
    result = short_run("sqlite", seed=5, workdir=tmp_path)
    print(table([result]), LEGEND, details(result), sep="\n")
    assert [why for why, _ in result.kills] == ["sell_post", "after_release", "close_job"]
    assert sum(result.faults.values()) > 0
    assert result.orders >= 6
    assert result.invariants.problems() == []
    assert result.recovered_next() == (len(result.failed_sessions), len(result.failed_sessions))
    assert result.passed, details(result)


def test_the_invariants_see_a_fill_the_trade_log_lost(tmp_path):
    """The checks are not vacuous: a fill row deleted after the run shows up."""
    from tests.soak.harness import Soak, SoakConfig, soak_days, synthetic
    from tests.soak.runs import FIRST_DAY, PATIENT, SKEWED

    days = soak_days(FIRST_DAY, 1)
    url = f"sqlite:///{tmp_path / 'one.sqlite'}"
    soak = Soak(SoakConfig("one", synthetic(days), days, url, tmp_path, holdings=SKEWED,
                           execution=PATIENT))
    assert soak.run().passed
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cid = conn.execute(sa.text("SELECT client_order_id FROM fills LIMIT 1")).scalar_one()
        conn.execute(sa.text("DELETE FROM fills WHERE client_order_id = :c"), {"c": cid})
    found = check(soak.venue.alpaca, read_ledger(engine, soak.prefix), soak.prefix,
                  soak.venue.holdings_at_start, after_close=True)
    engine.dispose()
    assert any(cid in text for text in found.fill_differences)
    assert found.symbol_differences and found.position_differences


def test_killed_inside_a_postgresql_flush_the_bot_loses_nothing(tmp_path):
    """The crash matrix's two kill points inside the trade log's transaction, on
    PostgreSQL, whose rows go in by COPY: killed after the orders were inserted and
    before their events, then before the close's equity row; each planned kill must
    fire (a point the bot never reaches fails the run) and the next session recover."""
    from tests.soak.runs import crash_matrix

    results = crash_matrix("postgresql", seed=3, workdir=tmp_path, sessions=2,
                           only=("mid_flush", "close_flush"))
    print(table(results), details_of(results), sep="\n")
    for result in results:
        assert [why for why, _ in result.kills] == [result.name], details(result)
        assert result.kills_missed == []
        assert result.passed, details(result)


def details_of(results) -> str:
    return "\n".join(details(r) for r in results)
