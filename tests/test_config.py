import textwrap

import pytest

from bot.cli import main
from bot.config import load_settings, parse_settings
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
    assert "'inverse_vol', 'erc', 'mean_variance' or 'strategic'" in text
    assert str(path) in text


def test_a_date_with_a_time_a_short_period_and_a_bad_waiver_read_plainly(tmp_path):
    path = write(tmp_path, """
        [universe]
        SPY = { weight = 1.0 }
        [risk]
        position_cap = 1.0
        [backtest]
        start = 2010-03-01T00:00:00
        periods = [["crash", "2020-02-19"]]
        [data]
        allow_extreme = ["nonsense"]
    """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = err.value.problems
    assert "backtest.start: Input should be a valid string (got 2010-03-01T00:00:00): expected a " \
           "date YYYY-MM-DD, without a time" in problems
    assert any(p.startswith("backtest.periods.0.2: expected [name, start, end]") for p in problems)
    (waiver,) = [p for p in problems if p.startswith("data.allow_extreme")]
    assert waiver.count("'nonsense'") == 1  # named once, not again in "(got ...)"


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


def test_checks_between_fields_are_reported_with_the_field_errors(tmp_path):
    """A typo hid every check between fields: the weights, the drawdown rule and the
    overlay's symbols came one run after another. All four are reported at once, and
    nothing is made up from the defaults standing in for the risk table."""
    path = write(tmp_path, """
        [universe]
        AAA = { weight = 0.7 }
        BBB = { weight = 0.5 }
        [risk]
        vol_hgih = 2
        position_cap = 0.6
        drawdown_exit = 0.2
        drawdown_enter = 0.1
        [overlay.GROWTH]
        ZZZ = 1.2
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = err.value.problems
    assert problems[0].startswith("risk.vol_hgih: Extra inputs are not permitted; did you mean vol_high?")
    assert any("drawdown_exit must be below drawdown_enter" in p for p in problems)
    assert any("universe.*.weight" in p and "sum to 1, got 1.200000" in p for p in problems)
    assert any(p.startswith("overlay.GROWTH.ZZZ: not in universe") for p in problems)
    assert not any("position_cap" in p for p in problems)  # 0.6 x 2 assets holds 100%
    assert len(problems) == len(set(problems)) == 4


def test_an_entry_of_the_universe_set_aside_is_not_judged_by_the_checks_across_tables(tmp_path):
    """One fund written as a number was reported, and then "risk.position_cap: 0.3 x 3
    assets cannot hold 100%" for a universe of four: the checks across tables judged the
    universe without it."""
    path = write(tmp_path, """
        [universe]
        AAA = { weight = 0.25 }
        BBB = { weight = 0.25 }
        CCC = { weight = 0.25 }
        DDD = 0.25
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.problems == ["universe.DDD: Input should be a valid dictionary or instance of "
                                  "Asset (got 0.25)"]


@pytest.mark.parametrize(("edits", "reported"), [
    ([("drawdown_enter = 0.10", 'drawdown_enter = "0.15"'), ("drawdown_exit = 0.05", "drawdown_exit = 0.12")],
     "risk.drawdown_enter"),
    ([("vix_uncertainty = 35.0", 'vix_uncertainty = "45"'), ("vix_transition = 25.0", "vix_transition = 40")],
     "regime.vix_uncertainty"),
    ([("TQQQ = { leverage = 3, weight = 0.20,", 'TQQQ = { leverage = 3, weight = "0.20",')],
     "universe.TQQQ.weight"),
])
def test_a_value_set_aside_is_not_judged_again_as_its_default(tmp_path, edits, reported):
    """A quoted "0.15" was reported, and then "drawdown_exit must be below drawdown_enter
    (got exit 0.12 >= enter 0.1)": the check judged the default standing in for it (and
    "weights must sum to 1, got 0.8" for a quoted weight)."""
    text = CONFIG.read_text()
    for old, changed in edits:
        assert old in text
        text = text.replace(old, changed, 1)
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = err.value.problems
    assert len(problems) == 1 and problems[0].startswith(reported), problems


def test_a_config_saved_with_a_byte_order_mark_reads_as_toml(tmp_path):
    """A Windows editor's BOM, invisible there, was "not valid TOML ... line 1, column 1"."""
    path = tmp_path / "bom.toml"
    path.write_bytes(CONFIG.read_bytes().decode().encode("utf-8-sig"))
    assert load_settings(path).symbols == load_settings(CONFIG).symbols


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


# --- values that used to pass `bot config check` and crash later -------------------------

ONE_ASSET = """
    [universe]
    TQQQ = { weight = 1.0 }
    [risk]
    position_cap = 1.0
    """


def test_bad_dates_non_finite_numbers_and_urls_are_reported_by_field(tmp_path):
    path = write(tmp_path, ONE_ASSET + """
        [backtest]
        start = "2010-13-45"
        end = "yesterday"
        initial_cash = inf
        periods = [["typo", "2020-01-01", "2020-02-30"]]
        [data]
        synthetic_start = "garbage"
        [regime]
        vix_uncertainty = nan
        [store]
        url = "not a url"
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = "\n".join(err.value.problems)
    for field in ("backtest.start", "backtest.end", "backtest.initial_cash", "backtest.periods.0.2",
                  "data.synthetic_start", "regime.vix_uncertainty", "store.url"):
        assert field in problems, field
    assert "expected a real calendar date YYYY-MM-DD (got '2010-13-45')" in problems
    assert "expected a date YYYY-MM-DD (got 'yesterday')" in problems
    assert "finite number (got inf)" in problems and "finite number (got nan)" in problems
    assert "store.url: expected a SQLite or PostgreSQL database URL" in problems
    assert main(["config", "check", str(path)]) == 1


def test_spans_must_run_forward(tmp_path):
    path = write(tmp_path, ONE_ASSET + """
        [backtest]
        start = "2020-01-01"
        end = "2019-01-01"
        periods = [["backwards", "2021-01-01", "2020-01-01"]]
        [data]
        synthetic_start = "2020-01-01"
        synthetic_end = "2010-01-01"
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = "\n".join(err.value.problems)
    assert "backtest: start 2020-01-01 must be before end 2019-01-01" in problems
    assert "periods[0] 'backwards': start 2021-01-01 must be before end 2020-01-01" in problems
    assert "data: synthetic_start 2020-01-01 must be before synthetic_end 2010-01-01" in problems


def test_toml_dates_may_be_unquoted(tmp_path):
    s = load_settings(write(tmp_path, ONE_ASSET + "[backtest]\nstart = 2012-01-03\nend = 2013-01-02\n"))
    assert (s.backtest.start, s.backtest.end) == ("2012-01-03", "2013-01-02")


def test_a_bad_store_url_does_not_echo_its_password(tmp_path):
    path = write(tmp_path, ONE_ASSET + '[store]\nurl = "postgresql://bot:s3cret@db:port/x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "store.url" in str(err.value) and "s3cret" not in str(err.value)
    assert "bot:***@db" in str(err.value)


def test_unreadable_files_are_named_not_tracebacks(tmp_path, capsys):
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[strategy]\n")
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(folder)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(binary)
    assert main(["config", "check", str(folder), str(binary), str(CONFIG)]) == 1
    out = capsys.readouterr().out
    assert f"{folder}: INVALID" in out and f"{binary}: INVALID" in out and f"{CONFIG}: OK" in out


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("risk", "correlation_window", 100000, "risk.correlation_window"),
    ("risk", "vol_history", 100000, "risk.vol_history"),
    ("risk", "vol_window", 300, "vol_window (300) must be shorter than vol_history (252)"),
    ("data", "synthetic_seed", -7, "data.synthetic_seed"),
])
def test_values_that_would_silently_disable_a_rule_or_crash_later_are_refused(
    section, key, value, message
):
    raw = load_settings(CONFIG).model_dump(mode="json")
    raw[section][key] = value
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, "test")
    assert any(message in p for p in err.value.problems), err.value.problems


def test_an_overlay_of_zeros_is_refused():
    settings = load_settings(CONFIG)
    raw = settings.model_dump(mode="json")
    raw["overlay"]["GROWTH"] = dict.fromkeys(settings.symbols, 0.0)
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, "test")
    assert any(p.startswith("overlay.GROWTH: every multiplier is 0") for p in err.value.problems)
    raw["overlay"]["GROWTH"] = {"TQQQ": 0.0}  # the others keep 1: fine
    parse_settings(raw, "test")


# --- a user's first hour: what the errors say, and tables that override part of a default --


def test_an_unknown_key_names_the_field_it_was_meant_to_be(tmp_path):
    """Before: `strategy.vol_windw: Extra inputs are not permitted`, which says nothing of
    what the field is called; a name with no near match lists its table's fields."""
    path = write(tmp_path, ONE_ASSET + """
        [strategyy]
        name = "x"
        [factor.weights]
        trnd = 0.3
        [rebalance]
        colour = 1
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = err.value.problems
    assert "strategyy: Extra inputs are not permitted; did you mean strategy?" in problems
    assert "factor.weights.trnd: Extra inputs are not permitted; did you mean trend?" in problems
    colour = next(p for p in problems if p.startswith("rebalance.colour"))
    assert "expected one of schedule, execution_lag_days, every_days" in colour
    typo = write(tmp_path, ONE_ASSET.replace("TQQQ = { weight", "TQQQ = { levrage = 3, weight"))
    with pytest.raises(ConfigError, match=r"universe\.TQQQ\.levrage: .*did you mean leverage\?"):
        load_settings(typo)


def test_an_overlay_for_an_unknown_regime_names_it_without_pydantic_markers(tmp_path):
    path = write(tmp_path, ONE_ASSET + "[overlay.BULL]\nTQQQ = 1.0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.problems == [
        "overlay.BULL: Input should be 'GROWTH', 'TRANSITION' or 'UNCERTAINTY' (got 'BULL')"
    ]


def test_publication_lags_named_in_part_keep_the_others_defaults(tmp_path):
    """Before: `{ VIX = 1 }` replaced the whole table, and the policy-uncertainty index,
    published the day after its date, was read with a lag of 0 (look-ahead)."""
    s = load_settings(write(tmp_path, ONE_ASSET + "[regime]\npublication_lag_days = { VIX = 1 }\n"))
    assert s.regime.publication_lag_days == {"VIX": 1, "T10Y2Y": 0, "USEPUINDXD": 1}
    s = load_settings(write(tmp_path, ONE_ASSET + "[regime]\npublication_lag_days = { USEPUINDXD = 0 }\n"))
    assert s.regime.publication_lag_days == {"VIX": 0, "T10Y2Y": 0, "USEPUINDXD": 0}


@pytest.mark.parametrize("weighting", ["erc", "mean_variance"])
def test_weighting_assets_against_each_other_needs_two_of_them(tmp_path, weighting):
    """Before: `bot config check` passed a one-asset universe with erc or mean_variance,
    and the first decision crashed in numpy (np.diag of a 0-d covariance)."""
    path = write(tmp_path, ONE_ASSET + f'[strategy]\nweighting = "{weighting}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.problems == [
        f"strategy.weighting: {weighting} weighs assets against each other and needs at "
        "least two in the universe (one asset: inverse_vol or strategic)"
    ]
    for fine in ("inverse_vol", "strategic"):
        load_settings(write(tmp_path, ONE_ASSET + f'[strategy]\nweighting = "{fine}"\n'))


def test_a_waiver_naming_no_loaded_series_is_refused(tmp_path):
    """data.allow_extreme compares names exactly: "tqqq" or a typo could never apply, and
    the load stopped anyway on the day it was meant to accept, with a hint to add it."""
    path = write(tmp_path, """
        [universe]
        TQQQ = { weight = 0.5 }
        TMF = { weight = 0.5 }
        [data]
        allow_extreme = ["TQQQ:2020-03-16", "VIX:2020-03-16", "tqqq:2020-03-16", "TQQQQ:2020-03-16"]
        """)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    problems = [p for p in err.value.problems if p.startswith("data.allow_extreme")]
    assert len(problems) == 2
    assert "'tqqq:2020-03-16' names 'tqqq'" in problems[0] and "it would never apply" in problems[0]
    assert "'TQQQQ'" in problems[1]


def test_relative_paths_start_at_the_repository_for_config_and_at_the_file_elsewhere(
        tmp_path, monkeypatch, capsys):
    """A copy of the config in /tmp/newcomer/my.toml read data from /tmp/data and wrote
    /tmp/var/tradelog.sqlite (its folder's parent), and the replay's "inspect it" hint
    then showed run 1 of another trade log. Its own folder now; the hint names the log
    and the options that read it."""
    import shutil

    from bot.config import resolve_data_dir, resolve_store_url
    from tests.conftest import REPO

    monkeypatch.delenv("BOT_DATA_DIR", raising=False)
    monkeypatch.delenv("BOT_DATABASE_URL", raising=False)
    mine = tmp_path / "newcomer" / "my.toml"
    mine.parent.mkdir()
    shutil.copy(CONFIG, mine)
    settings = load_settings(mine)
    assert resolve_data_dir(settings, mine) == tmp_path / "newcomer" / "data"
    assert resolve_store_url(settings, mine) == f"sqlite:///{tmp_path / 'newcomer' / 'var' / 'tradelog.sqlite'}"
    assert resolve_data_dir(settings, CONFIG) == REPO / "data"  # config/ in the repository
    project = tmp_path / "project" / "config" / "x.toml"  # a project laid out the same way
    project.parent.mkdir(parents=True)
    shutil.copy(CONFIG, project)
    assert resolve_data_dir(settings, project) == tmp_path / "project" / "data"

    assert main(["run", "--config", str(mine), "--synthetic", "--replay", "2023-01-03:2023-01-13"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "newcomer" / "var" / "tradelog.sqlite").is_file()
    assert f"trade log: sqlite:///{tmp_path / 'newcomer' / 'var' / 'tradelog.sqlite'}" in out
    assert f"bot orders --run 1 --config {mine} " in out


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("strategy", "name", "", "strategy.name: expected a name with a letter or digit"),
    ("strategy", "name", " - ", "expected a name with a letter or digit"),
    ("stress", "durations", {"TLT": 16.5, "ief": 7.5}, "stress.durations: expected tickers in capitals"),
    ("store", "url", "mysql://x", "store.url: expected a SQLite or PostgreSQL database URL"),
])
def test_names_lists_and_keys_that_would_be_misread_are_refused(section, key, value, message):
    """Before, each passed: a blank strategy name prefixed every order with a bare '-',
    a lower-case fund in stress.durations matched no column, so its duration was silently
    not used, and a database the trade log cannot live in failed after the data loaded."""
    raw = load_settings(CONFIG).model_dump(mode="json")
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, "test")
    assert any(message in p for p in err.value.problems), err.value.problems


def test_a_rule_listed_twice_runs_once_and_the_order_is_the_guards():
    """The guard's order is fixed: two orders of one list are one config (one fingerprint)."""
    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["risk"]["rules"] = ["stops", "drawdown", "stops"]
    first = parse_settings(raw, "test")
    assert first.risk.rules == ("drawdown", "stops")
    raw["risk"]["rules"] = ["drawdown", "stops"]
    assert parse_settings(raw, "test").fingerprint() == first.fingerprint()
