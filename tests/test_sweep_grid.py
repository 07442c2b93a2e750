"""`--grid` and `--set`: values read like TOML, every combination validated by the same
settings as a config file, and a bad one refused before any data is loaded, with the
field, the value and the combination named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.config import load_settings
from bot.errors import BotError, ConfigError
from bot.sweep.grid import (
    expand,
    format_value,
    parse_assignment,
    parse_axis,
    parse_grid,
    parse_value,
)
from tests.conftest import CONFIG
from tests.test_cli_errors import run_cli


@pytest.fixture(scope="module")
def base():
    return load_settings(CONFIG)


def test_values_are_read_like_toml_and_bare_words_stay_text() -> None:
    assert parse_axis("risk.vol_high=1.25, 1.5,2").values == (1.25, 1.5, 2)
    assert parse_axis("strategy.weighting=erc,inverse_vol").values == ("erc", "inverse_vol")
    assert parse_axis("strategy.var_adjust=true,false").values == (True, False)
    axis = parse_axis('risk.rules=["volatility","stops"],[]')  # commas inside a list stay
    assert axis.values == (["volatility", "stops"], [])
    assert parse_axis("backtest.start=2012-01-03").values == ("2012-01-03",)  # dates stay text
    assert parse_assignment("risk.rules=[\"stops\"]") == ("risk.rules", ["stops"])


def test_combinations_vary_the_first_grid_slowest_and_set_the_fields(base) -> None:
    variants = expand(
        base, parse_grid(["risk.vol_high=1.25,2", "rebalance.every_days=2,8"]), "cfg"
    )
    assert [v.params for v in variants] == [
        {"risk.vol_high": 1.25, "rebalance.every_days": 2},
        {"risk.vol_high": 1.25, "rebalance.every_days": 8},
        {"risk.vol_high": 2, "rebalance.every_days": 2},
        {"risk.vol_high": 2, "rebalance.every_days": 8},
    ]
    last = variants[-1].settings
    assert (last.risk.vol_high, last.rebalance.every_days) == (2.0, 8)
    assert last.risk.vol_low == base.risk.vol_low  # everything else is the file's
    assert len({v.settings.fingerprint() for v in variants}) == 4


def test_every_bad_value_is_named_once_with_a_combination_that_has_it(base) -> None:
    axes = parse_grid(["risk.vol_high=0.5,1.5", "risk.drawdown_exit=0.05,0.2"])
    with pytest.raises(ConfigError) as refused:
        expand(base, axes, "cfg.toml")
    problems = refused.value.problems
    assert problems[0] == (
        "risk.vol_high: Input should be greater than 1 (got 0.5) "
        "[with risk.vol_high=0.5, risk.drawdown_exit=0.05]"
    )
    assert any(
        "drawdown_exit must be below drawdown_enter (got exit 0.2 >= enter 0.1)" in p
        and p.endswith("risk.drawdown_exit=0.2]")  # the first combination that has it
        for p in problems
    )
    assert len(problems) == len(set(problems)) == 2
    assert "cfg.toml with the --grid values" in str(refused.value)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["risk.vol_high"], "--grid 'risk.vol_high': expected KEY=V1,V2,..."),
        (["risk.vol_high=1,,2"], "an empty value"),
        (["risk.vol_high=1.5,1.5"], "--grid risk.vol_high: the value 1.5 is given twice"),
        (["risk.vol_high=1.5", "risk.vol_high=2"], "given more than once"),
        (["risk=1", "risk.vol_high=2"], "--grid risk and --grid risk.vol_high set the same field"),
        (["data.directory=a,b"], "cannot vary in a sweep: the data is loaded once"),
        (["store.url=sqlite://"], "every run of a sweep goes to one trade log"),
    ],
)
def test_malformed_grids_are_refused(specs, message) -> None:
    with pytest.raises(BotError) as refused:
        parse_grid(specs)
    assert message in str(refused.value)


def test_true_is_not_one_twice_the_field_names_what_it_expects(base) -> None:
    """`1,true` was refused as "the value true is given twice" (Python's True == 1, as
    4.0 == 4), hiding the real problem: a whole number was expected."""
    axes = parse_grid(["rebalance.every_days=1,true"])
    with pytest.raises(ConfigError) as refused:
        expand(base, axes, "cfg.toml")
    assert "rebalance.every_days: Input should be a valid integer" in str(refused.value)
    assert len(parse_grid(["risk.vol_high=4,4.0"])[0].values) == 2


def test_values_that_validate_to_the_same_config_are_refused_naming_both(base) -> None:
    """`2,2.0` ran the same backtest twice, and the warning that a key changes nothing
    then named risk.vol_high; so did rule lists in two orders (the guard's is fixed)."""
    axes = parse_grid(["rebalance.every_days=2,8", "risk.vol_high=2,2.0"])
    with pytest.raises(BotError) as refused:
        expand(base, axes, "cfg.toml")
    message = str(refused.value)
    assert message.startswith("--grid risk.vol_high: the values 2 and 2.0 give the same config")
    assert "rebalance.every_days=2, risk.vol_high=2 and rebalance.every_days=2, risk.vol_high=2.0" in message
    axes = parse_grid(['risk.rules=["stops","volatility"],["volatility","stops"]'])
    with pytest.raises(BotError, match=r'--grid risk.rules: the values \["stops","volatility"\] and '
                                       r'\["volatility","stops"\] give the same config'):
        expand(base, axes, "cfg.toml")
    assert len(expand(base, parse_grid(["risk.vol_high=2,2.5"]), "cfg.toml")) == 2


def test_walk_forward_refuses_a_grid_over_the_span() -> None:
    parse_grid(["backtest.start=2012-01-03,2013-01-02"])  # fine without walk-forward
    with pytest.raises(BotError, match="cannot vary with --walk-forward"):
        parse_grid(["backtest.start=2012-01-03,2013-01-02"], walk_forward=True)
    # the whole section as a table: it slipped past, and the windows were cut by position
    # out of curves that started elsewhere (a test window's return was another period's)
    with pytest.raises(BotError, match="--grid backtest: cannot vary with --walk-forward"):
        parse_grid(['backtest={start="2016-01-01"},{start="2016-03-01"}'], walk_forward=True)
    parse_grid(["backtest.fill=next_open,same_close"], walk_forward=True)  # not the span


def test_a_bad_grid_fails_the_command_before_any_work(capsys, tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    code, _, err = run_cli(
        capsys, "sweep", "--config", str(CONFIG), "--synthetic", "--database", f"sqlite:///{db}",
        "--grid", "risk.vol_high=1.5,0.9", "--grid", "risk.vol_hgih=2",
    )
    assert code == 2
    assert "risk.vol_high: Input should be greater than 1 (got 0.9)" in err
    # its value is never echoed; the field it was meant to be is
    assert "risk.vol_hgih: Extra inputs are not permitted; did you mean vol_high? [with" in err
    assert "Traceback" not in err
    assert not db.exists()  # refused before the trade log was opened
    # a grid of 1,200 combinations: refused at once, not validated and recorded for minutes
    code, _, err = run_cli(
        capsys, "sweep", "--config", str(CONFIG), "--synthetic", "--database", f"sqlite:///{db}",
        "--grid", "risk.vol_high=" + ",".join(str(1.01 + i / 100) for i in range(40)),
        "--grid", "rebalance.every_days=" + ",".join(str(d) for d in range(1, 31)),
    )
    assert code == 2 and "--grid: 1,200 combinations, more than --max-combinations 1,000" in err
    assert not db.exists()
    code, _, err = run_cli(
        capsys, "sweep", "--config", str(CONFIG), "--synthetic", "--database", f"sqlite:///{db}",
        "--grid", "risk.vol_high=2,2.0",
    )
    assert code == 2 and "--grid risk.vol_high: the values 2 and 2.0 give the same config" in err
    assert not db.exists()


def test_bot_backtest_set_is_validated_like_the_file(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
        "--database", f"sqlite:///{tmp_path / 'log.sqlite'}", "--set", "rebalance.every_days=0",
    )
    assert code == 2
    assert "rebalance.every_days: Input should be greater than or equal to 1 (got 0)" in err
    assert "with --set rebalance.every_days=0" in err  # not in the file
    code, _, err = run_cli(
        capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
        "--database", f"sqlite:///{tmp_path / 'log.sqlite'}", "--set", "universe.TQQQ.weight=abc",
    )
    assert code == 2 and "universe.TQQQ.weight: Input should be a valid number (got 'abc')" in err
    assert "without quotes" not in err  # the user typed none
    code, _, err = run_cli(
        capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
        "--database", f"sqlite:///{tmp_path / 'log.sqlite'}", "--start", "2024-06-01",
        "--end", "2024-01-01",
    )  # before: "invalid configuration <file>", which holds neither date
    assert code == 2 and "with --start 2024-06-01 --end 2024-01-01:" in err
    assert "backtest: start 2024-06-01 must be before end 2024-01-01" in err
    code, _, err = run_cli(capsys, "sweep", "--config", str(CONFIG), "--synthetic",
                           "--grid", "risk.vol_high=1.5,abc")
    assert code == 2 and "risk.vol_high: Input should be a valid number (got 'abc')" in err
    assert "without quotes" not in err
    code, _, err = run_cli(capsys, "backtest", "--set", "every_days")
    assert code == 2 and "--set 'every_days': expected KEY=VALUE" in err
    # a typo of a fund added a seventh fund to the universe, which the run traded
    for command in (["backtest", "--set", "universe.TQQ.leverage=3"],
                    ["sweep", "--grid", "universe.TQQ.leverage=2,3"]):
        code, _, err = run_cli(capsys, *command, "--config", str(CONFIG), "--synthetic",
                               "--database", f"sqlite:///{tmp_path / 'typo.sqlite'}")
        assert code == 2, command
        assert "universe.TQQ is not in the config; an override changes what is there" in err
        assert "(universe has DIG, TMF, TQQQ, UDOW, UGL, UPRO)" in err


@pytest.mark.parametrize(
    "value",
    [1.5, 2, True, "erc", ["volatility", "stops"], [], {"leverage": 1, "role": "bond"}, "1.5",
     "true", "2016-01-04"],
)
def test_values_are_shown_as_they_are_typed_back(value) -> None:
    """The tables and the `bot backtest --set` line of the best combination print values
    that read back as the same value ("1.5" the text stays quoted, not the number)."""
    assert parse_value(format_value(value)) == value


def test_the_heatmap_colours_in_the_units_its_label_names() -> None:
    """Before: the colour bar said "max DD %" and ran from -0.31 to -0.29, while the
    cells printed -31.44 and -28.65."""
    from bot.sweep.grid import Axis
    from bot.sweep.report import _cell_text, heatmap_grid, metric_header

    axes = (Axis("risk.vol_high", (1.25, 2.0)), Axis("rebalance.every_days", (2, 8)))
    values = [-0.3144, -0.2865, None, -0.30]
    rows = [{"position": k, "summary": None if v is None else {"max_drawdown": v, "sharpe": 1.0 + k},
             "error": "boom" if v is None else None} for k, v in enumerate(values)]
    grid, failed = heatmap_grid(rows, axes, "max_drawdown")
    assert metric_header("max_drawdown").endswith("%")
    assert grid[0].tolist() == pytest.approx([-31.44, -28.65]) and grid[1, 1] == pytest.approx(-30.0)
    assert np.isnan(grid[1, 0]) and failed.tolist() == [[False, False], [True, False]]
    assert _cell_text("max_drawdown", grid[0, 0]) == "-31.44"
    sharpe, _ = heatmap_grid(rows, axes, "sharpe")  # not a percentage: as recorded
    assert sharpe[0].tolist() == [1.0, 2.0]
