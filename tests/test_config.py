import textwrap

import pytest

from bot.cli import main
from bot.config import load_settings
from bot.errors import ConfigError
from tests.conftest import CONFIG


def write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_config_is_valid_and_matches_the_research():
    s = load_settings(CONFIG)
    assert s.symbols == ("TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG")
    assert [s.universe[k].weight for k in s.symbols] == [0.20, 0.20, 0.10, 0.25, 0.10, 0.15]
    assert s.risk.position_cap == 0.30 and s.rebalance.every_days == 4
    assert s.rebalance.drift == 0.05 and s.risk.vol_high == 1.5 and s.risk.vol_low == 0.7


def test_every_invalid_field_is_reported_by_name(tmp_path):
    path = write(tmp_path, """
        [strategy]
        weighting = "magic"
        vol_window = 1
        [universe]
        TQQQ = { leverage = "three", weight = 0.6 }
        UPRO = { weight = 0.6, role = "stock" }
        [risk]
        vol_high = 0.9
        unknown_knob = 3
        [backtest]
        fill = "tomorrow"
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = str(err.value)
    for field in ("strategy.weighting", "strategy.vol_window", "universe.TQQQ.leverage",
                  "universe.UPRO.role", "risk.vol_high", "risk.unknown_knob", "backtest.fill"):
        assert field in text, field
    assert "'inverse_vol', 'erc' or 'strategic'" in text
    assert str(path) in text


def test_cross_field_rules_name_the_field(tmp_path):
    path = write(tmp_path, """
        [universe]
        TQQQ = { weight = 0.5 }
        TMF = { weight = 0.2 }
        [overlay.GROWTH]
        SPY = 1.2
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = err.value.problems
    assert any("universe.*.weight" in p and "sum to 1" in p for p in problems)
    assert any(p.startswith("overlay.GROWTH.SPY") for p in problems)
    assert any("risk.position_cap" in p for p in problems)


def test_drawdown_exit_must_sit_below_the_entry(tmp_path):
    path = write(tmp_path, """
        [universe]
        TQQQ = { weight = 1.0 }
        [risk]
        position_cap = 1.0
        drawdown_enter = 0.05
        drawdown_exit = 0.08
        """)
    with pytest.raises(ConfigError, match="risk: drawdown_exit must be below drawdown_enter"):
        load_settings(path)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[strategy\nname="))


def test_config_check_command(tmp_path, capsys):
    bad = write(tmp_path, "[universe]\nTQQQ = { weight = 2 }\n")
    assert main(["config", "check", str(CONFIG)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["config", "check", str(CONFIG), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "universe.TQQQ.weight" in out
