"""FRED's API (with a key) and its fredgraph.csv download (without one) against a fake
FRED on 127.0.0.1."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.data import fred
from bot.data.fred import fetch_macro, fetch_series, parse_fredgraph_csv, parse_observations
from bot.errors import DataError
from bot.net import RetryPolicy
from bot.secrets import SecretsError, load_fred_key
from tests.fakes import Response
from tests.fakes.fred_server import API_KEY, FakeFred, Fault

D = dt.date


@pytest.fixture
def fake():
    server = FakeFred()
    server.series = {
        "VIXCLS": [(D(2024, 11, 27), 14.1), (D(2024, 11, 28), None), (D(2024, 11, 29), 13.51)],
        "T10Y2Y": [(D(2024, 11, 27), 0.05), (D(2024, 11, 29), 0.07)],
        "USEPUINDXD": [(D(2024, 11, 28), 180.2), (D(2024, 11, 29), 99.6)],
        "DTB3": [(D(2024, 11, 29), 4.42)],
    }
    server.start()
    yield server
    server.stop()


@pytest.fixture
def policy(sleeps):
    return RetryPolicy(attempts=3, timeout=5.0, base_delay=0.2, jitter=0.0, sleep=sleeps.append)


def test_observation_date_header_and_dot_values(fake, policy):
    vix = fetch_series("VIX", base_url=fake.url, policy=policy)
    assert vix.name == "VIX"
    assert vix.dates.astype(str).tolist() == ["2024-11-27", "2024-11-29"]  # "." dropped
    assert vix.values.tolist() == [14.1, 13.51]
    [call] = fake.calls("GET", "/graph/fredgraph.csv")
    assert call.query == {"id": "VIXCLS"}


def test_older_date_header(fake, policy):
    fake.header = "DATE"
    assert fetch_series("VIXCLS", base_url=fake.url, policy=policy).values.tolist() == [14.1, 13.51]


def test_blank_values_are_dropped():
    series = parse_fredgraph_csv("observation_date,DTB3\n2024-11-28,\n2024-11-29,4.42\n", "DTB3")
    assert series.values.tolist() == [4.42]


def test_start_is_sent_and_applied(fake, policy):
    series = fetch_series("T10Y2Y", base_url=fake.url, start=D(2024, 11, 28), policy=policy)
    assert fake.calls("GET", "/graph/fredgraph.csv")[0].query["cosd"] == "2024-11-28"
    assert series.values.tolist() == [0.07]


def test_the_series_share_one_connection(policy):
    """fetch_macro (as the daemon's feed) asks every series over one session: one TLS
    handshake with FRED, not one per series."""
    server = FakeFred()
    server.keep_alive = True
    values = {"VIXCLS": 14.1, "T10Y2Y": 0.05, "USEPUINDXD": 99.6, "DTB3": 4.42}
    server.series = {fid: [(D(2024, 11, 29), value)] for fid, value in values.items()}
    with server:
        fetch_macro(base_url=server.url, policy=policy)
        fetch_series("VIX", base_url=server.url, policy=policy)  # alone: its own connection
    calls = server.calls("GET", "/graph/fredgraph.csv")
    assert len(calls) == 5 and len({c.peer for c in calls[:4]}) == 1
    assert calls[4].peer != calls[0].peer


def test_all_macro_series_by_our_names(fake, policy):
    macro = fetch_macro(base_url=fake.url, policy=policy)
    assert sorted(macro) == ["DTB3", "T10Y2Y", "USEPUINDXD", "VIX"]
    assert [c.query["id"] for c in fake.calls("GET", "/graph/fredgraph.csv")] == [
        "VIXCLS",
        "T10Y2Y",
        "USEPUINDXD",
        "DTB3",
    ]


def test_503_is_retried_with_backoff(fake, policy, sleeps):
    fake.inject("GET", "/graph/fredgraph.csv", Fault.text(503, "busy"), Fault.text(503, "busy"))
    assert fetch_series("DTB3", base_url=fake.url, policy=policy).values.tolist() == [4.42]
    assert len(fake.calls("GET", "/graph/fredgraph.csv")) == 3
    assert sleeps == [0.2, 0.4]


def test_persistent_503_is_a_data_error(fake, policy):
    fake.inject("GET", "/graph/fredgraph.csv", *[Fault.text(503, "busy")] * 3)
    with pytest.raises(DataError, match=r"fred:DTB3.*HTTP 503"):
        fetch_series("DTB3", base_url=fake.url, policy=policy)


def test_timeout_is_retried(fake, sleeps):
    policy = RetryPolicy(attempts=2, timeout=0.3, base_delay=0.1, jitter=0.0, sleep=sleeps.append)
    fake.inject("GET", "/graph/fredgraph.csv", Fault.slow(30))
    assert fetch_series("DTB3", base_url=fake.url, policy=policy).values.tolist() == [4.42]
    assert sleeps == [0.1]


def test_timeout_and_retries_parameters_build_the_policy(fake):
    fake.inject("GET", "/graph/fredgraph.csv", Fault.slow(30), Fault.slow(30))
    with pytest.raises(DataError, match="timed out"):
        fetch_series("DTB3", base_url=fake.url, timeout=0.2, retries=1)
    assert len(fake.calls("GET", "/graph/fredgraph.csv")) == 2


def test_unknown_series_is_a_data_error(fake, policy):
    with pytest.raises(DataError, match=r"fred:NOPE.*HTTP 404"):
        fetch_series("NOPE", base_url=fake.url, policy=policy)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("<html>Error</html>\n", r"\[header\]: line 1"),
        ("observation_date,T10Y2Y\n", r"\[header\]: line 1"),
        (
            "observation_date,VIXCLS\n2024-11-27,14.1\n2024-11-28,abc\n",
            r"\[value\]: line 3: non-numeric value 'abc'",
        ),
        ("observation_date,VIXCLS\n2024-11-27,14.1,9\n", r"\[line\]: line 2: expected 2 fields"),
        ("observation_date,VIXCLS\n11/27/2024,14.1\n", r"\[date\]: line 2: unparseable date"),
        ("observation_date,VIXCLS\n2024-11-28,14.1\n2024-11-27,14.2\n", r"\[date\]: line 3"),
        ("observation_date,VIXCLS\n2024-11-28,.\n", r"\[value\]: no values"),
        ("", r"empty answer"),
    ],
)
def test_malformed_csv_names_series_and_line(fake, policy, body, pattern):
    fake.raw["VIXCLS"] = body
    with pytest.raises(DataError, match=rf"fred:VIXCLS.*{pattern}"):
        fetch_series("VIX", base_url=fake.url, policy=policy)


@pytest.mark.parametrize("with_key", [False, True])
def test_a_start_after_the_latest_value_says_so_not_every_value_blank(fake, policy, with_key):
    """Before: `no values (every observation is blank)`, for an answer with none at all."""
    where = {"api_key": API_KEY, "api_url": fake.url} if with_key else {"base_url": fake.url}
    with pytest.raises(DataError) as caught:
        fetch_series("VIX", start=D(2024, 12, 2), policy=policy, **where)
    message = str(caught.value)
    assert message.startswith("fred:VIXCLS [value]: no observations on or after 2024-12-02")
    assert "blank" not in message
    fake.series["VIXCLS"] = [(D(2024, 12, 2), None), (D(2024, 12, 3), None)]
    with pytest.raises(DataError, match=r"fred:VIXCLS \[value\]: no values \(every \w+ is blank\)"):
        fetch_series("VIX", start=D(2024, 12, 2), policy=policy, **where)


# --- the API, with a key ------------------------------------------------------------------

OBSERVATIONS = "/fred/series/observations"


def test_with_a_key_the_series_come_from_the_api(fake, policy):
    fake.csv_refused = True  # as FRED's download is now
    vix = fetch_series("VIX", api_key=API_KEY, api_url=fake.url, base_url=fake.url, policy=policy)
    assert vix.name == "VIX" and vix.values.tolist() == [14.1, 13.51]  # "." dropped
    assert vix.dates.astype(str).tolist() == ["2024-11-27", "2024-11-29"]
    [call] = fake.calls("GET", OBSERVATIONS)
    assert call.query["series_id"] == "VIXCLS" and call.query["api_key"] == API_KEY
    assert call.query["file_type"] == "json" and "observation_start" not in call.query
    assert fake.calls("GET", "/graph/fredgraph.csv") == []
    spread = fetch_series("T10Y2Y", api_key=API_KEY, api_url=fake.url, start=D(2024, 11, 28),
                          policy=policy)
    assert spread.values.tolist() == [0.07]
    assert fake.calls("GET", OBSERVATIONS)[-1].query["observation_start"] == "2024-11-28"
    macro = fetch_macro(api_key=API_KEY, api_url=fake.url, policy=policy)
    assert sorted(macro) == ["DTB3", "T10Y2Y", "USEPUINDXD", "VIX"]


def test_a_series_longer_than_a_page_is_read_in_pages(fake, policy, monkeypatch):
    monkeypatch.setattr(fred, "API_PAGE", 2)
    days = [D(2024, 11, 4) + dt.timedelta(days=k) for k in range(5)]
    fake.series["USEPUINDXD"] = [(d, 100.0 + k) for k, d in enumerate(days)]
    series = fetch_series("USEPUINDXD", api_key=API_KEY, api_url=fake.url, policy=policy)
    assert series.values.tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert [c.query["offset"] for c in fake.calls("GET", OBSERVATIONS)] == ["0", "2", "4"]


@pytest.mark.parametrize(
    ("key", "series", "said"),
    [
        ("f" * 32, "VIX", "The value for variable api_key is not registered"),
        (API_KEY, "NOPE", "The series does not exist"),
    ],
)
def test_an_api_refusal_says_what_fred_said_never_the_key(fake, policy, key, series, said):
    with pytest.raises(DataError) as caught:
        fetch_series(series, api_key=key, api_url=fake.url, policy=policy)
    text = str(caught.value)
    assert "HTTP 400" in text and said in text and key not in text
    assert ("FRED_API_KEY" in text) == ("api_key" in said)  # the hint only for a key problem


@pytest.mark.parametrize(
    ("observations", "pattern"),
    [
        ([{"date": "2024-11-27", "value": "abc"}], r"\[value\]: observation 1: non-numeric"),
        ([{"date": "27/11/2024", "value": "14"}], r"\[date\]: observation 1: unparseable date"),
        ([{"date": "2024-11-27"}], r"\[observation\]: observation 1: expected date and value"),
        ([{"date": "2024-11-28", "value": "14"}, {"date": "2024-11-27", "value": "15"}],
         r"\[date\]: observation 2: 2024-11-27 is not after"),
        ([{"date": "2024-11-27", "value": "."}], r"\[value\]: no values"),
        ([{"date": "2024-11-27", "value": "-50"}], r"VIX -50 is outside its plausible range"),
    ],
)
def test_malformed_observations_name_series_and_observation(observations, pattern):
    with pytest.raises(DataError, match=rf"fred:VIXCLS.*{pattern}"):
        parse_observations(observations, "VIXCLS", "VIX")


def test_observations_that_are_not_a_list_are_a_data_error(fake, policy):
    fake.inject("GET", OBSERVATIONS, Fault(Response(200, {"observations": None, "count": 0})))
    with pytest.raises(DataError, match=r"fred:VIXCLS \[observations\]: expected a list"):
        fetch_series("VIX", api_key=API_KEY, api_url=fake.url, policy=policy)


def test_a_csv_download_refused_without_a_key_says_how_to_get_one(fake, policy):
    fake.csv_refused = True
    with pytest.raises(DataError) as caught:
        fetch_series("VIX", base_url=fake.url, policy=policy)
    text = str(caught.value)
    assert "HTTP 403" in text and "without an API key" in text and "FRED_API_KEY" in text
    assert "https://fredaccount.stlouisfed.org/apikeys" in text


def test_the_key_comes_from_the_environment_or_the_secrets_file_and_is_masked(tmp_path, capsys):
    from bot.logs import configure_logging, get_logger

    assert load_fred_key({}) is None
    assert load_fred_key({"FRED_API_KEY": API_KEY}) == API_KEY
    secrets = tmp_path / "secrets.env"
    secrets.write_text("FRED_API_KEY=" + "a1" * 16 + "\n")
    secrets.chmod(0o600)
    assert load_fred_key({"BOT_SECRETS_FILE": str(secrets)}) == "a1" * 16
    wrong = "ABC" + API_KEY[3:]
    with pytest.raises(SecretsError) as caught:
        load_fred_key({"FRED_API_KEY": wrong})
    assert "expected 32 lower-case letters and digits" in str(caught.value)
    assert wrong not in str(caught.value)
    configure_logging("INFO")
    get_logger("test").warning("a url", url=f"https://api.stlouisfed.org/x?api_key={API_KEY}")
    out = capsys.readouterr()
    assert API_KEY not in out.out + out.err and "api_key=***" in out.out + out.err


def test_a_live_feed_on_fred_itself_needs_the_api_key():
    """FRED refuses its keyless CSV download to scripts (HTTP 403): a daemon started
    without FRED_API_KEY warned at every job, fell back to the stored series and never
    decided the regime again. It now refuses to start, naming the variable; a mirror
    (BOT_FRED_URL) may still serve the CSV without one."""
    from bot.daemon.live_feed import AlpacaFeed
    from bot.secrets import FRED_URL, SecretsError

    def feed(url, key=None):
        return AlpacaFeed(None, None, ("SPY",), url, None, 400, fred_api_key=key)

    with pytest.raises(SecretsError, match="FRED_API_KEY is not set.*fredaccount.stlouisfed.org"):
        feed(FRED_URL + "/")
    assert feed(FRED_URL, "a" * 32).fred_api_key == "a" * 32
    assert feed("http://127.0.0.1:8099").fred_api_key is None


@pytest.mark.parametrize("key", [None, '"ABCDEF"'])
def test_a_daemon_without_a_usable_fred_key_is_refused_before_it_records_a_run(
        tmp_path, monkeypatch, capsys, key):
    """The key was read inside the start, after the run was recorded: each refused start
    left a failed paper run and a start_failed incident, as the Alpaca keys never do."""
    from bot.cli import main
    from bot.store.tradelog import TradeLog

    monkeypatch.setenv("APCA_API_KEY_ID", "PKTESTKEY0000000")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s" * 40)
    monkeypatch.delenv("BOT_FRED_URL", raising=False)
    monkeypatch.delenv("BOT_SECRETS_FILE", raising=False)
    # were it to get further, only 127.0.0.1 (a closed port) is ever asked; FRED's own
    # URL stays, since a keyless start is refused only there
    monkeypatch.setenv("APCA_API_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("APCA_API_DATA_URL", "http://127.0.0.1:9")
    if key is None:
        monkeypatch.delenv("FRED_API_KEY", raising=False)
    else:
        monkeypatch.setenv("FRED_API_KEY", key)
    db = tmp_path / "log.sqlite"
    assert main(["run", "--database", f"sqlite:///{db}"]) == 2
    assert "FRED_API_KEY" in capsys.readouterr().err
    if db.exists():
        log = TradeLog.open_readonly(f"sqlite:///{db}")
        assert log.runs().empty
        log.close()
