"""The client-account registry, its CSV import, and the account on every trade-log row
(SQLite and PostgreSQL), seen through `bot accounts`, the inspection commands and the
dashboard."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.accounts import AccountRegistry, AccountSpec
from bot.accounts.csv_import import CsvImportError, read_accounts_csv
from bot.dashboard.snapshot import MarketCache, collect
from bot.errors import BotError
from bot.store import TradeLog
from bot.store.benchmark import RunMarket
from bot.types import EquityPoint, Fill, Order, OrderRequest, OrderStatus, Regime, Side, TargetRow
from tests.conftest import REPO
from tests.test_store import T0, backend_url, start


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


@pytest.fixture
def tlog(url: str) -> Iterator[TradeLog]:
    log = TradeLog.open(url)
    yield log
    log.close()


A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"
C = "33333333-3333-4333-8333-333333333333"
DAY = dt.date(2024, 3, 4)


def run_cli(*argv: str) -> int:
    from bot.cli import main

    return main(list(argv))


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


# --- the registry ---------------------------------------------------------------------


def test_add_show_close_and_list(url, capsys):
    db = ("--database", url)
    answers = '{"answers": {"horizon": "10y", "loss": "sell none"}, "score": 31}'
    assert run_cli("accounts", "add", A.upper(), "--profile", "Balanced",
                   "--suitability", answers, "--created", "2024-01-02", *db) == 0
    assert "account 1: " + A in capsys.readouterr().out
    assert run_cli("accounts", "add", A, "--profile", "balanced", *db) == 2
    assert "already registered" in capsys.readouterr().err

    assert run_cli("accounts", "show", A, *db) == 0
    out = capsys.readouterr().out
    assert "profile:      balanced" in out and "created:      2024-01-02 00:00 UTC" in out
    assert '"score": 31' in out and "equity:       none recorded yet" in out

    assert run_cli("accounts", "close", "1", *db) == 0
    assert run_cli("accounts", "close", "1", *db) == 2
    assert "already closed" in capsys.readouterr().err
    assert run_cli("accounts", "list", "--format", "json", *db) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "closed" and row["closed_at"] and row["suitability"]["score"] == 31


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "--profile", "balanced"], "broker_account_id: expected a broker account id"),
        ([A, "--profile", "agressive"], "--profile: expected conservative, balanced, aggressive"),
        ([A, "--profile", "balanced", "--suitability", "[1, 2]"], "--suitability: expected a JSON object"),
        ([A, "--profile", "balanced", "--suitability", "{bad"], "--suitability: expected a JSON object"),
        ([A, "--profile", "balanced", "--created", "2024-13-01"], "--created: expected YYYY-MM-DD"),
        ([A, "--profile", "balanced", "--created", "0001-01-01T00:00:00+01:00"],
         "--created: expected a time between the years 1 and 9999 in UTC"),
        ([A, "--profile", "balanced", "--suitability", '{"score": NaN}'], "NaN is not a JSON number"),
        ([A, "--profile", "balanced", "--suitability", "[" * 100_000],
         "--suitability: expected a JSON object, got one nested too deeply"),
        ([A, "--profile", "balanced", "--suitability", '{"score": 1e400}'],
         "--suitability: expected a JSON object, e.g. '{\"score\": 7}': 1e400 is not a finite number"),
        ([A, "--profile", "balanced", "--suitability", '{"answers": {"name": "a\\u0000b"}}'],
         "--suitability: expected text without NUL characters (\\u0000), got one in the value at "
         "/answers/name"),
        ([A, "--profile", "balanced", "--suitability", '{"\\ud800": 1}'],
         "--suitability: expected valid Unicode text, got a lone surrogate (\\ud800-\\udfff) in a key at /"),
        ([A, "--profile", "config/" + "x" * 200 + ".toml"],
         "--profile: expected a config path of at most 200 characters, got one of 212"),
    ],
)
def test_bad_account_fields_are_named(argv, message, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert run_cli("accounts", "add", *argv, "--database", db) == 2
    assert message in capsys.readouterr().err


def test_text_postgresql_cannot_store_is_refused_before_the_database(url, tmp_path, capsys):
    """NUL, a lone surrogate and a path longer than the column were PostgreSQL-only
    tracebacks: both backends now refuse them up front, naming the field."""
    nul = '{"note": "\\u0000"}'
    assert run_cli("accounts", "add", A, "--profile", "balanced", "--suitability", nul, "--database", url) == 2
    assert "--suitability: expected text without NUL characters" in capsys.readouterr().err
    rows = write(tmp_path / "odd.csv", f"""
broker_account_id,profile,suitability
{A},balanced,"{{""n"": ""\\u0000""}}"
{B},balanced,"{{""\\udfff"": 1}}"
{C},{tmp_path / ("x" * 200 + ".toml")},
""")
    assert run_cli("accounts", "import", str(rows), "--database", url) == 2
    err = capsys.readouterr().err
    assert f"{rows} row 2, column suitability: expected text without NUL characters" in err
    assert f"{rows} row 3, column suitability: expected valid Unicode text, got a lone surrogate" in err
    assert f"{rows} row 4, column profile: expected a config path of at most 200 characters" in err
    log = TradeLog.open(url)
    try:
        assert AccountRegistry(log.engine).list() == []
    finally:
        log.close()


def test_a_profile_may_be_any_valid_robo_config_file(tmp_path):
    """The leveraged-ETF config loads, but trades 3x funds under no MiFID risk class:
    the allocation API and `bot suitability` refused it, the registry took it."""
    from bot.accounts.registry import check_profile

    # one file is one profile, whatever way it is written (each was a profile of its own,
    # decided and pushed apart; a relative path resolved only from where it was added)
    for written in ("config/robo_balanced.toml", "./config/robo_balanced.toml",
                    str(REPO / "config" / "robo_balanced.toml"), "BALANCED"):
        assert check_profile(written) == "balanced", written
    custom = write(tmp_path / "custom.toml", (REPO / "config" / "robo_balanced.toml").read_text())
    assert check_profile(str(custom)) == str(custom.resolve())
    bad = write(tmp_path / "bad.toml", '[rebalance]\nevery_days = "often"\n')
    with pytest.raises(ValueError, match="bad.toml is invalid"):
        check_profile(str(bad))
    with pytest.raises(ValueError, match=r"diversified_leverage.toml is a 'leverage' strategy; "
                                         r"a client account trades a robo profile"):
        check_profile("config/diversified_leverage.toml")


def test_a_named_profile_trades_its_packaged_config():
    from bot.accounts import profile_config

    assert profile_config("aggressive") == REPO / "config" / "robo_aggressive.toml"


# --- CSV import -------------------------------------------------------------------------


GOOD_CSV = f"""
broker_account_id,profile,suitability,created_at
{A},conservative,"{{""score"": 12}}",2024-01-02
{B},aggressive,,
{C},balanced,,2024-03-01T10:00:00Z
"""


def test_import_is_idempotent_and_updates_what_changed(url, tmp_path, capsys):
    good = write(tmp_path / "accounts.csv", GOOD_CSV)
    assert run_cli("accounts", "import", str(good), "--database", url) == 0
    assert "3 added, 0 updated, 0 closed, 0 unchanged" in capsys.readouterr().out
    log = TradeLog.open(url)
    first = {a.broker_account_id: a for a in AccountRegistry(log.engine).list()}
    assert run_cli("accounts", "import", str(good), "--database", url) == 0
    assert "0 added, 0 updated, 0 closed, 3 unchanged" in capsys.readouterr().out
    again = {a.broker_account_id: a for a in AccountRegistry(log.engine).list()}
    assert again == first  # not even updated_at moved

    assert first[A].suitability == {"score": 12} and first[B].suitability is None
    assert first[A].created_at == dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    assert first[C].created_at == dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)

    changed = write(tmp_path / "changed.csv", f"""
broker_account_id,profile,status
{A},balanced,
{B},aggressive,closed
""")
    assert run_cli("accounts", "import", str(changed), "--database", url) == 0
    assert "0 added, 1 updated, 1 closed, 0 unchanged" in capsys.readouterr().out
    now = {a.broker_account_id: a for a in AccountRegistry(log.engine).list()}
    assert now[A].profile == "balanced" and now[A].suitability == {"score": 12}
    assert now[B].status == "closed" and now[B].closed_at is not None

    reopen = write(tmp_path / "reopen.csv", f"broker_account_id,profile,status\n{A},balanced,\n{B},aggressive,active\n")
    assert run_cli("accounts", "import", str(reopen), "--database", url) == 2
    assert (f"{reopen} row 3, column status: account {B} is closed ({now[B].closed_at:%Y-%m-%d}), "
            "got status active: a closed account is not reopened") in capsys.readouterr().err
    assert AccountRegistry(log.engine).get(B).status == "closed"
    log.close()


def test_reimporting_a_file_without_status_after_close_changes_nothing(url, tmp_path, capsys):
    """A file without a status column keeps each account's status: the same file again
    after `bot accounts close` leaves the account closed and reports it unchanged."""
    same = write(tmp_path / "same.csv", f"broker_account_id,profile\n{A},balanced\n{B},aggressive\n")
    assert run_cli("accounts", "import", str(same), "--database", url) == 0
    assert run_cli("accounts", "close", A, "--database", url) == 0
    capsys.readouterr()
    assert run_cli("accounts", "import", str(same), "--database", url) == 0
    assert "0 added, 0 updated, 0 closed, 2 unchanged" in capsys.readouterr().out
    log = TradeLog.open(url)
    try:
        accounts = {a.broker_account_id: a.status for a in AccountRegistry(log.engine).list()}
    finally:
        log.close()
    assert accounts == {A: "closed", B: "active"}


def test_a_field_over_the_csv_limit_names_its_line_and_the_reason(tmp_path, capsys):
    notes = '{""notes"": ""' + "x" * 200_000 + '""}'
    big = write(tmp_path / "big.csv", f'broker_account_id,profile,suitability\n{A},balanced,"{notes}"\n')
    with pytest.raises(BotError) as failed:
        read_accounts_csv(big)
    assert str(failed.value) == (
        f"{big} line 2: cannot be read as CSV: field larger than field limit (131072)")


def test_show_takes_any_reference_add_accepts(tmp_path, capsys):
    """A registry id too large for the id column is no id (not a traceback), and a
    32-digit UUID without hyphens is the broker account id, not a registry id."""
    db = ("--database", f"sqlite:///{tmp_path / 't.sqlite'}")
    digits = "12345678123456781234567812345678"
    assert run_cli("accounts", "add", digits, "--profile", "balanced", *db) == 0
    capsys.readouterr()
    assert run_cli("accounts", "show", digits, *db) == 0
    assert "account 1: 12345678-1234-5678-1234-567812345678" in capsys.readouterr().out
    assert run_cli("accounts", "show", "99999999999999999999", *db) == 2
    assert "no account 99999999999999999999 in the registry" in capsys.readouterr().err
    assert run_cli("accounts", "close", str(2**63), *db) == 2
    assert f"no account {2**63} in the registry" in capsys.readouterr().err


def test_list_finds_a_named_profile_in_any_case(tmp_path, capsys):
    db = ("--database", f"sqlite:///{tmp_path / 't.sqlite'}")
    assert run_cli("accounts", "add", A, "--profile", "Balanced", *db) == 0
    capsys.readouterr()
    assert run_cli("accounts", "list", "--profile", "BALANCED", "--format", "json", *db) == 0
    assert [row["broker_account_id"] for row in json.loads(capsys.readouterr().out)] == [A]


def test_every_bad_row_and_column_is_named_and_nothing_is_imported(tmp_path):
    bad = write(tmp_path / "bad.csv", f"""
broker_account_id,profile,suitability,status,created_at
{A},balanced,,,
nope,agressive,[1],open,yesterday
{B},balanced,,,
{A},conservative,,,
{C},,"{{""score"": }}",,2024-01-02T10:00:00
""")
    with pytest.raises(CsvImportError) as failed:
        read_accounts_csv(bad)
    problems = [p.removeprefix(f"{bad} ") for p in failed.value.problems]
    assert problems == [
        "row 3, column broker_account_id: expected a broker account id (a UUID like "
        "8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44), got 'nope'",
        "row 3, column profile: expected conservative, balanced, aggressive or a config file, "
        "got 'agressive'",
        "row 3, column suitability: expected a JSON object, e.g. '{\"score\": 7}', got list",
        "row 3, column status: expected one of active, suspended, closed, got 'open'",
        "row 3, column created_at: expected YYYY-MM-DD or an ISO timestamp, got 'yesterday'",
        f"row 5, column broker_account_id: {A} is already on row 2",
        "row 6, column profile: a value is required",
        "row 6, column suitability: expected a JSON object, e.g. '{\"score\": 7}': Expecting value",
        "row 6, column created_at: expected a time zone on the timestamp (e.g. Z), "
        "got '2024-01-02T10:00:00'",
    ]
    assert "nothing imported" in str(failed.value)


def test_a_bad_header_is_refused_before_any_row(tmp_path, capsys):
    bad = write(tmp_path / "h.csv", f"broker_account_id,profil,Suitability\n{A},balanced,\n")
    assert run_cli("accounts", "import", str(bad), "--database", f"sqlite:///{tmp_path}/t.sqlite") == 2
    err = capsys.readouterr().err
    assert "row 1: column profile is missing" in err and "column 2 'profil': unknown column" in err
    assert not (tmp_path / "t.sqlite").exists()  # nothing was opened, let alone written
    assert run_cli("accounts", "import", str(tmp_path / "missing.csv"), "--database",
                   f"sqlite:///{tmp_path}/t.sqlite") == 2
    assert "missing.csv: no such file" in capsys.readouterr().err


# --- every row tagged with its account ------------------------------------------------


def order(cid: str, symbol: str = "SPY") -> Order:
    request = OrderRequest(cid, cid.rsplit("-", 2)[0], symbol, Side.BUY, 10.0, "weekly", 500.0)
    return Order(request, OrderStatus.NEW, T0)


def platform_run(log: TradeLog) -> tuple[int, int, int]:
    """Two client accounts and the single-account daemon's rows, in one run."""
    registry = AccountRegistry(log.engine)
    one = registry.add(AccountSpec(A, "balanced"), T0).id
    two = registry.add(AccountSpec(B, "aggressive"), T0).id
    run_id = start(log, mode="paper")
    for account, price in ((one, 500.0), (two, 510.0), (None, 520.0)):
        with log.recording_for(account):
            cid = f"robo-{account}-20240304-rb-SPY-buy"
            log.order(order(cid))
            log.equity(EquityPoint(DAY, 10_000.0 + price, 5_000.0, 5_000.0 + price, 0.0, Regime.GROWTH))
            log.positions(DAY, {"SPY": (10.0, price)})
    # Fills arrive later, while another account is being recorded: each keeps its order's.
    with log.recording_for(two):
        for account, price in ((one, 500.0), (two, 510.0), (None, 520.0)):
            log.fill(Fill(f"robo-{account}-20240304-rb-SPY-buy", "SPY", Side.BUY, 10.0, price, 0.0, 0.0, T0))
    log.flush()
    return run_id, one, two


def test_orders_fills_positions_and_equity_carry_their_account(tlog):
    run_id, one, two = platform_run(tlog)
    with tlog.engine.connect() as conn:
        for table in ("orders", "fills", "positions", "equity"):
            rows = conn.execute(sa.text(f"SELECT account_id FROM {table} ORDER BY id")).scalars().all()
            assert rows == [one, two, None], table
    assert tlog.load_positions(run_id, account=one)["price"].tolist() == [500.0]
    assert tlog.load_positions(run_id, account=None)["price"].tolist() == [520.0]
    assert len(tlog.load_positions(run_id)) == 3


def test_one_equity_row_per_run_account_and_day(tlog):
    run_id, one, _two = platform_run(tlog)
    point = EquityPoint(DAY, 1.0, 1.0, 0.0, 0.0, None)
    for account in (one, None):
        with tlog.recording_for(account):
            tlog.equity(point)
        with pytest.raises(sa.exc.IntegrityError):
            tlog.flush()
    incidents = tlog.load_incidents()
    assert list(incidents["kind"]) == ["tradelog_rejected", "tradelog_rejected"]


def test_inspection_commands_take_an_account(url, capsys):
    log = TradeLog.open(url)
    run_id, one, two = platform_run(log)
    log.close()
    capsys.readouterr()  # the flush's debug line
    db = ("--database", url)
    assert run_cli("orders", "--account", B, "--format", "json", *db) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["account_id"] == two and row["client_order_id"] == f"robo-{two}-20240304-rb-SPY-buy"
    assert run_cli("trades", "--account", str(one), "--format", "json", *db) == 0
    assert [Decimal(r["price"]) for r in json.loads(capsys.readouterr().out)] == [500]
    assert run_cli("positions", "--account", B, "--format", "json", *db) == 0
    (held,) = json.loads(capsys.readouterr().out)
    assert Decimal(held["price"]) == 510 and held["weight"] == pytest.approx(5100 / 10510)
    assert run_cli("equity", "--account", A, "--format", "csv", *db) == 0
    (day,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert Decimal(day["equity"]) == 10500
    assert run_cli("runs", "--account", A, "--format", "json", *db) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [run_id]
    # Without --account: every account's rows, the single-account daemon's included.
    assert run_cli("positions", "--format", "json", *db) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3

    assert run_cli("orders", "--account", C, *db) == 2
    assert f"--account {C}: no such account in the registry" in capsys.readouterr().err
    assert run_cli("accounts", "show", B, *db) == 0
    out = capsys.readouterr().out
    assert re.search(r"equity: +10510\.0* on 2024-03-04", out) and "holdings:     SPY 10 " in out


def test_the_dashboard_shows_one_account(tlog):
    run_id, one, two = platform_run(tlog)
    markets = MarketCache(lambda *_: RunMarket(None, None, None, None, "no SPY here"))
    data = collect(tlog, None, markets, account=two)
    assert data["account"] == two and data["run"]["id"] == run_id
    assert Decimal(data["equity"]["latest"]) == 10510 and data["trade_count"] == 1
    assert [Decimal(r["price"]) for r in data["trades"]] == [510]
    assert data["weights"]["rows"][0]["current"] == pytest.approx(5100 / 10510)
    with pytest.raises(BotError, match="several client accounts: show one with --account"):
        collect(tlog, None, markets)


def test_the_dashboard_shows_an_accounts_own_profile_targets(tlog):
    """A platform batch records every profile's targets under one run and day: the
    dashboard showed the last-decided profile's (aggressive's QQQ, ARKK...) as the
    targets of a balanced client."""
    from bot.platform.store import DECISIONS, StoredDecision, decision_rows

    run_id, one, two = platform_run(tlog)
    day = dt.date(2024, 3, 1)
    decided = {"balanced": {"SPY": 0.5, "BND": 0.5}, "aggressive": {"QQQ": 0.6, "XLK": 0.4}}
    for profile, weights in decided.items():  # aggressive last, as in a batch
        tlog.targets(day, f"platform-robo_{profile}-20240301-rb",
                     [TargetRow(s, w, w, w, None, ("score",)) for s, w in weights.items()], "weekly")
    tlog.flush()
    stored = [StoredDecision(run_id, p, day, f"platform-robo_{p}-20240301-rb", w, None)
              for p, w in decided.items()]
    with tlog.engine.begin() as conn:
        conn.execute(sa.insert(DECISIONS), decision_rows(run_id, stored, dict.fromkeys(decided, "h"), T0))
    markets = MarketCache(lambda *_: RunMarket(None, None, None, None, "no SPY here"))
    for account, profile in ((one, "balanced"), (two, "aggressive")):
        weights = collect(tlog, None, markets, account=account)["weights"]
        targets = {r["symbol"]: r["target"] for r in weights["rows"] if r["target"] is not None}
        assert targets == {**decided[profile], "CASH": pytest.approx(0.0)}, profile
        assert weights["targets_day"] == "2024-03-01"
    # moved to a profile this batch did not decide: no targets, never another profile's
    with tlog.engine.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET profile = 'conservative' WHERE id = :id"), {"id": one})
    weights = collect(tlog, None, markets, account=one)["weights"]
    assert all(r["target"] is None for r in weights["rows"]) and weights["targets_day"] is None


def test_stress_and_report_of_a_run_of_several_accounts_need_one_account(url, tmp_path, capsys):
    """A platform batch's run: read together, `bot stress --run` weighed one account's
    holdings against another's equity and `bot report --run` crashed on the equity rows
    of several accounts a day. Refused, naming the accounts; --account picks one."""
    import argparse

    from bot.store.run_report import build_stored_report
    from bot.stress_cli import _stored_run

    log = TradeLog.open(url)
    run_id, one, two = platform_run(log)
    log.close()
    capsys.readouterr()  # the flush's debug line
    for command in (["stress"], ["report", "--no-charts", "--out", str(tmp_path / "r")]):
        assert run_cli(*command, "--run", str(run_id), "--database", url) == 2
        err = capsys.readouterr().err
        assert f"run {run_id} holds the records of several client accounts" in err, command
        assert f"{one} ({A}), {two} ({B}), none (rows without an account)" in err
        assert "--account ID" in err
    assert not (tmp_path / "r").exists()

    config = REPO / "config" / "diversified_leverage.toml"
    args = argparse.Namespace(run=run_id, account=B, config=str(config), database=url)
    _settings, portfolio, _data, _notes = _stored_run(args, None)
    assert portfolio.weights == pytest.approx({"SPY": 5100 / 10510})  # B's holdings over B's equity
    assert portfolio.source == f"run {run_id}'s holdings (account {two})"

    no_spy = RunMarket(None, None, None, None, "no SPY here")
    reader = TradeLog.open_readonly(url)
    try:
        stored = build_stored_report(reader, run_id, config_path=config, database=url,
                                     market=no_spy, account=str(one))
        assert stored.account == one and stored.report["meta"]["account"] == one
        assert stored.strategy.equity.tolist() == [10_500.0] and len(stored.strategy.fills) == 1
        with pytest.raises(BotError, match=rf"--account {C}: no such account"):
            build_stored_report(reader, run_id, config_path=config, database=url,
                                market=no_spy, account=C)
    finally:
        reader.close()


def test_an_existing_trade_log_keeps_its_rows_through_the_accounts_migration(url):
    """A database at revision 0001 with a daemon's records: after the upgrade every row is
    there, without an account, and still one equity row per run and day."""
    from alembic import command

    from bot.store.engines import writer_engine
    from bot.store.models import METADATA
    from bot.store.schema import INITIAL_REVISION, alembic_config, upgrade

    engine = writer_engine(url)
    tables = METADATA.tables
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), INITIAL_REVISION)
        conn.execute(sa.insert(tables["runs"]), {
            "mode": "paper", "strategy": "s", "config_hash": "h", "config": {},
            "code_version": "v", "data_source": "d", "synthetic": False,
            "started_at": T0, "status": "running"})
        conn.execute(sa.insert(tables["equity"]), {
            "run_id": 1, "day": DAY, "equity": 1, "cash": 1, "positions_value": 0, "drawdown": 0.0})
        conn.execute(sa.insert(tables["orders"]), {
            "run_id": 1, "client_order_id": "d-1", "rebalance_id": "d", "symbol": "SPY",
            "side": "buy", "quantity": 1, "reference_price": 1, "reason": "r", "status": "new",
            "filled_quantity": 0, "submitted_at": T0, "updated_at": T0})
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT account_id FROM orders")).all() == [(None,)]
        assert conn.execute(sa.text("SELECT account_id FROM equity")).all() == [(None,)]
    engine.dispose()
    log = TradeLog.open(url)
    log.run_id = 1
    log.equity(EquityPoint(DAY, 2.0, 2.0, 0.0, 0.0, None))
    with pytest.raises(sa.exc.IntegrityError):
        log.flush()
    log.close()


def test_a_repository_profile_is_its_file_from_any_folder_and_old_spellings_are_found(tmp_path, monkeypatch):
    """The stored form of a repository file (config/x.toml) was read from the working
    directory first: a worker started in a folder with a config/ of its own traded that
    folder's file. And an account added before profiles were stored one way is still
    listed by the spelling it was added with."""
    import sqlalchemy as sa

    from bot.accounts import profile_config
    from bot.store.models import METADATA

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "config").mkdir(parents=True)
    write(elsewhere / "config" / "robo_balanced.toml", "# another file of that name\n")
    monkeypatch.chdir(elsewhere)
    assert profile_config("config/robo_balanced.toml") == (REPO / "config" / "robo_balanced.toml").resolve()
    assert profile_config("balanced") == (REPO / "config" / "robo_balanced.toml").resolve()
    # typed at `accounts add` here, the path means this folder's file (an edited copy), kept
    # by its absolute path, not swapped for the repository's of the same name
    from bot.accounts.registry import normalise_profile

    assert normalise_profile("config/robo_balanced.toml") == str((elsewhere / "config" / "robo_balanced.toml").resolve())

    log = TradeLog.open(f"sqlite:///{tmp_path / 'log.sqlite'}")
    registry = AccountRegistry(log.engine)
    now = dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
    account = registry.add(AccountSpec("8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44", "balanced"), now)
    with log.engine.begin() as conn:  # as an older version stored it
        conn.execute(sa.update(METADATA.tables["accounts"]).values(profile="./config/robo_balanced.toml"))
    assert [a.id for a in registry.list(profile="./config/robo_balanced.toml")] == [account.id]
    log.close()
