"""Deployment files: what can be checked without Docker."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests import unit_sandbox
from tests.conftest import REPO

BASE = REPO / "deploy" / "docker-compose.yml"
PLATFORM = REPO / "deploy" / "docker-compose.platform.yml"


def test_compose_runs_the_bot_with_postgres_restart_and_secrets_from_env():
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    bot, db = compose["services"]["bot"], compose["services"]["db"]
    assert bot["restart"] == "unless-stopped" and db["restart"] == "unless-stopped"
    assert bot["env_file"] == [".env"]
    assert bot["depends_on"]["db"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert bot["environment"]["BOT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "bot db upgrade" in " ".join(bot["command"]) and "bot run" in " ".join(bot["command"])
    assert bot["stop_signal"] == "SIGTERM"
    text = (REPO / "deploy" / "docker-compose.yml").read_text()
    assert not re.search(r"(SECRET|PASSWORD|KEY_ID)\s*[:=]\s*[A-Za-z0-9]{6,}", text)


def test_dockerfile_is_slim_non_root_with_healthcheck():
    text = (REPO / "Dockerfile").read_text()
    # Pinned: a Python and a Debian release, one base for the wheel and the image.
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert bases[0] == "${PYTHON_IMAGE}"  # a build arg, for a mirror or a stand-in base
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", default)
    assert text.index("ARG PYTHON_IMAGE") < text.index("FROM ")  # seen by both stages
    assert re.search(r"^USER leverbot$", text, re.M)
    assert "HEALTHCHECK" in text and '"bot", "health"' in text
    assert "COPY . " not in text  # only what the image needs


def test_systemd_unit_restarts_and_is_hardened():
    text = (REPO / "deploy" / "bot.service").read_text()
    for line in ("Restart=on-failure", "RestartSec=30", "KillSignal=SIGTERM", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "User=leverbot", "EnvironmentFile=/etc/leverbot/env"):
        assert line in text
    # Never gives up: before, 5 failed starts in 10 minutes (a database down at boot, each
    # try failing in seconds) left the unit failed for good, the bot stopped unnoticed.
    assert "StartLimitIntervalSec=0" in text and "StartLimitBurst" not in text
    # ProtectHome hides the user cache: the stored session table goes to systemd's cache dir
    assert "ProtectHome=true" in text
    assert "CacheDirectory=leverbot" in text
    assert "Environment=BOT_CACHE_DIR=/var/cache/leverbot" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    # The unit's binary lives in /opt/leverbot on a real host; point it at /bin/true here
    # so verify checks everything else.
    unit = (REPO / "deploy" / "bot.service").read_text()
    unit = unit.replace("/opt/leverbot/.venv/bin/bot", "/bin/true")
    unit = unit.replace("EnvironmentFile=/etc/leverbot/env", "EnvironmentFile=-/etc/leverbot/env")
    path = tmp_path / "leverbot.service"
    path.write_text(unit)
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_compose_serves_the_dashboard_on_the_hosts_loopback_only():
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    dash = compose["services"]["dashboard"]
    command = dash["command"]
    assert command[:2] == ["bot", "dashboard"] and command[command.index("--host") + 1] == "0.0.0.0"
    assert dash["ports"] == ["127.0.0.1:8050:8050"]  # published on the host's loopback only
    assert dash["environment"]["BOT_DATABASE_URL"] == compose["services"]["bot"]["environment"]["BOT_DATABASE_URL"]
    assert "env_file" not in dash  # it needs no broker keys
    assert dash["read_only"] is True and dash["depends_on"]["db"]["condition"] == "service_healthy"


def test_compose_runs_the_platform_beside_the_same_postgres():
    """rabbitmq, redis, scheduler (`bot run --platform`), workers (`bot worker`) and api
    (`bot serve`) in their own file, loaded on top of the bot's, all on the one PostgreSQL
    trade log; secrets only as variables from deploy/.env."""
    text = PLATFORM.read_text()
    services = yaml.safe_load(text)["services"]
    base = yaml.safe_load(BASE.read_text())["services"]
    platform = ("rabbitmq", "redis", "scheduler", "workers", "api", "api-data")
    assert sorted(services) == sorted(platform)
    assert not set(platform) & set(base)  # the bot alone needs none of their passwords
    for name in platform:
        assert services[name]["restart"] == "unless-stopped"

    scheduler, workers, api = services["scheduler"], services["workers"], services["api"]
    assert "bot run --platform" in " ".join(scheduler["command"])
    assert "bot db upgrade" in " ".join(scheduler["command"])
    assert workers["command"][:2] == ["bot", "worker"] and workers["deploy"]["replicas"] == 2
    assert api["command"][:2] == ["bot", "serve"] and "--allow-remote" in api["command"]
    # behind the host's proxy (via Docker's bridge): the client's address is the proxy's
    # X-Forwarded-For, or one failed-key budget covered every client
    assert api["command"][api["command"].index("--forwarded-allow-ips") + 1] == "*"
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    # it serves real data, fetched into a volume before it starts and every hour after
    # (reloaded as it changes), never a synthetic market
    data = services["api-data"]
    assert "bot data fetch" in " ".join(data["command"]) and "sleep 3600" in " ".join(data["command"])
    assert data["environment"]["BOT_DATA_DIR"] == api["environment"]["BOT_DATA_DIR"] == "/app/data"
    assert "apidata:/app/data" in data["volumes"] and "apidata:/app/data:ro" in api["volumes"]
    assert api["depends_on"]["api-data"]["condition"] == "service_healthy"
    assert "/app/data/.fetched" in data["healthcheck"]["test"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    # the internet-facing service holds no .env: no Broker API keys, no queue password,
    # no data keys; the fetcher holds the data keys only
    assert api["env_file"] == [] == data["env_file"] and "BOT_QUEUE_URL" not in api["environment"]
    assert not any("BROKER" in name or "APCA" in name or "FRED" in name for name in api["environment"])
    assert not any("BROKER" in name or "PASSWORD" in value or "URL" in name and "@" in value
                   for name, value in data["environment"].items())
    assert api["environment"]["BOT_DATABASE_URL"] == base["bot"]["environment"]["BOT_DATABASE_URL"]
    assert api["environment"]["BOT_REDIS_URL"] == workers["environment"]["BOT_REDIS_URL"]
    for service in (scheduler, workers, api):
        env = service["environment"]
        assert env["BOT_DATABASE_URL"] == base["bot"]["environment"]["BOT_DATABASE_URL"]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        assert service["read_only"] is True
    for service in (scheduler, workers):
        assert service["environment"]["BOT_QUEUE_URL"].startswith("amqp://leverbot:${RABBITMQ_PASSWORD}@rabbitmq:")
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert workers["environment"]["BOT_REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0"
    assert workers["depends_on"]["redis"]["condition"] == "service_healthy"
    assert workers["env_file"] == [".env"]  # the Broker API keys
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD:?")
    assert "--requirepass" in services["redis"]["command"]
    example = (REPO / "deploy" / ".env.example").read_text()
    for variable in ("APCA_BROKER_API_KEY", "RABBITMQ_PASSWORD", "REDIS_PASSWORD",
                     "BOT_BROKER_REQUESTS_PER_MINUTE"):
        assert variable in example
    assert not re.search(r"(SECRET|PASSWORD|KEY_ID|PASS)\s*[:=]\s*[A-Za-z0-9]{6,}", text)


def _compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) or v1 (`docker-compose`, Debian's package): both
    check and interpolate a file without a Docker daemon (`config`)."""
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None and os.environ.get("CI") != "true",
    reason="neither `docker compose` nor `docker-compose` is installed (.ci/run installs it)",
)


def _compose_config(tmp_path, env: str, *files: str) -> subprocess.CompletedProcess[str]:
    """`compose config` of deploy's `files` with `env` as deploy/.env, in a copy of the
    deploy folder (the services' env_file is deploy/.env, never written in the repo)."""
    assert COMPOSE is not None, "CI=true: a compose command is required (.ci/run installs it)"
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    for name in files:
        shutil.copy(REPO / "deploy" / name, deploy / name)
    shutil.copy(REPO / "Dockerfile", tmp_path / "Dockerfile")  # the build context, ..
    (deploy / ".env").write_text(env)
    args = [a for name in files for a in ("-f", str(deploy / name))]
    return subprocess.run([*COMPOSE, *args, "--env-file", str(deploy / ".env"), "config"],
                          capture_output=True, text=True, cwd=tmp_path)


@needs_compose
def test_compose_runs_the_bot_with_only_its_own_secrets(tmp_path):
    """The bot and PostgreSQL start from a .env as deploy/.env.example makes it: no
    platform passwords (Compose interpolates every service of a file, so required
    platform variables in this file would stop the bot's deployment)."""
    proc = _compose_config(tmp_path, "APCA_API_KEY_ID=PKX\nPOSTGRES_PASSWORD=pg\n", BASE.name)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert sorted(services) == ["bot", "dashboard", "db"]
    url = services["bot"]["environment"]["BOT_DATABASE_URL"]
    assert url == "postgresql+psycopg://leverbot:pg@db:5432/leverbot"


@needs_compose
def test_compose_refuses_the_bot_without_its_database_password(tmp_path):
    proc = _compose_config(tmp_path, "APCA_API_KEY_ID=PKX\n", BASE.name)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr


@needs_compose
def test_compose_runs_the_platform_on_top_of_the_bot(tmp_path):
    env = "POSTGRES_PASSWORD=pg\nRABBITMQ_PASSWORD=mq\nREDIS_PASSWORD=rd\n"
    proc = _compose_config(tmp_path, env, BASE.name, PLATFORM.name)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert sorted(services) == ["api", "api-data", "bot", "dashboard", "db", "rabbitmq", "redis",
                                "scheduler", "workers"]
    workers = services["workers"]
    assert workers["environment"]["BOT_QUEUE_URL"] == "amqp://leverbot:mq@rabbitmq:5672//"
    assert workers["environment"]["BOT_REDIS_URL"] == "redis://:rd@redis:6379/0"
    assert workers["environment"]["BOT_DATABASE_URL"] == services["bot"]["environment"]["BOT_DATABASE_URL"]
    assert "rd" in services["redis"]["command"]
    # the platform file's build context is the repository, as the bot's
    assert workers["build"]["context"] == services["bot"]["build"]["context"] == str(tmp_path)


@needs_compose
@pytest.mark.parametrize("missing", ["RABBITMQ_PASSWORD", "REDIS_PASSWORD"])
def test_compose_refuses_the_platform_without_its_passwords(tmp_path, missing):
    values = {"POSTGRES_PASSWORD": "pg", "RABBITMQ_PASSWORD": "mq", "REDIS_PASSWORD": "rd"}
    del values[missing]
    env = "".join(f"{k}={v}\n" for k, v in values.items())
    proc = _compose_config(tmp_path, env, BASE.name, PLATFORM.name)
    assert proc.returncode != 0
    assert f"set {missing} in deploy/.env" in proc.stderr


def _dockerfile_copies() -> list[list[tuple[list[str], str]]]:
    """Each stage's `COPY SRC... DEST` from the build context (not --from another stage)."""
    stages: list[list[tuple[list[str], str]]] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            stages.append([])
        elif words[:1] == ["COPY"] and not words[1].startswith("--"):
            stages[-1].append((words[1:-1], words[-1]))
    return stages


def _copy_into(root, copies) -> None:
    for sources, dest in copies:
        for source in sources:
            src, target = REPO / source, root / dest
            if src.is_dir():
                shutil.copytree(src, target if dest != "./" else root / source,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:  # into a folder when DEST ends with a slash, else as the file DEST
                path = target / source.rsplit("/", 1)[-1] if dest.endswith("/") else target
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, path)


def test_the_images_files_install_and_run_the_daemon_outside_the_repository(tmp_path):
    """The Dockerfile's steps without Docker: a wheel built from only what its build stage
    copies, installed apart from this checkout, run in a folder holding only what the
    final stage copies (config/). A module or file the package needs but the image does
    not ship fails here: `bot db upgrade`, then the daemon on a simulated clock."""
    build, final = _dockerfile_copies()
    assert [dest for _, dest in final] == ["./config"]
    src, app, site = tmp_path / "src", tmp_path / "app", tmp_path / "site"
    _copy_into(src, build)
    _copy_into(app, final)
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "wheels"), str(src)], capture_output=True, text=True)
    assert wheel.returncode == 0, wheel.stderr
    (built,) = (tmp_path / "wheels").glob("leverbot-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(site), str(built)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "BOT_LOG_FORMAT": "json",
           "BOT_HEARTBEAT_FILE": str(app / "var" / "heartbeat"),
           "BOT_CACHE_DIR": str(tmp_path / "cache")}
    for name in ("BOT_DATABASE_URL", "BOT_DATA_DIR", "BOT_CONFIG", "APCA_API_KEY_ID",
                 "APCA_API_SECRET_KEY"):
        env.pop(name, None)
    (app / "var").mkdir()

    def bot(*args: str) -> subprocess.CompletedProcess[str]:
        # the console script pip wrote, as the image's CMD runs `bot`
        return subprocess.run([str(site / "bin" / "bot"), *args], capture_output=True,
                              text=True, cwd=app, env=env, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import bot; print(bot.__file__)"],
                           capture_output=True, text=True, cwd=app, env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # not this checkout
    upgrade = bot("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert (app / "var" / "tradelog.sqlite").exists()
    replay = bot("run", "--config", "config/diversified_leverage.toml",
                 "--replay", "2024-01-02:2024-02-29")
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert "replay run 1:" in replay.stdout and "SYNTHETIC" in replay.stdout
    runs = bot("runs")
    assert runs.returncode == 0 and "finished" in runs.stdout, runs.stdout + runs.stderr
    health = bot("health", "--max-age", "300")  # the image's HEALTHCHECK command exists
    assert health.returncode == 1 and "no heartbeat" in health.stdout


def test_each_daemon_has_its_own_heartbeat_file():
    """The image's health check reads the heartbeat file its daemon writes
    (BOT_HEARTBEAT_FILE, in /app/var). Two daemons writing one file (the bot and the
    platform's scheduler on one volume) would each look healthy while the other runs."""
    image_env = dict(re.findall(r"(BOT_HEARTBEAT_FILE)=(\S+)", (REPO / "Dockerfile").read_text()))
    services = {**yaml.safe_load(BASE.read_text())["services"],
                **yaml.safe_load(PLATFORM.read_text())["services"]}
    checked = {}
    for name, service in services.items():
        if "build" not in service or "healthcheck" in service:  # another image or check
            continue
        path = service.get("environment", {}).get("BOT_HEARTBEAT_FILE", image_env["BOT_HEARTBEAT_FILE"])
        mounts = [v.split(":") for v in service.get("volumes", [])]
        volume = next(src for src, dst in mounts if path.startswith(dst.rstrip("/") + "/"))
        checked[name] = (volume, path)
    assert set(checked) == {"bot", "scheduler"}
    assert len(set(checked.values())) == len(checked), checked


@pytest.mark.skipif(unit_sandbox.available() is not None,
                    reason=f"no sandbox like the unit's here: {unit_sandbox.available()}")
def test_the_daemon_replays_inside_the_units_sandbox(tmp_path):
    """deploy/bot.service confines the daemon: a read-only system but for its folders
    (ProtectSystem=strict, ReadWritePaths) and no memory both writable and executable
    (MemoryDenyWriteExecute: a dependency that compiled code at run time would stop the
    daemon on a real host). Its live modules are imported and a replay runs (scheduler,
    engine, trade log) under both (tests/unit_sandbox.py)."""
    unit = (REPO / "deploy" / "bot.service").read_text()
    for line in ("ProtectSystem=strict", "MemoryDenyWriteExecute=true", "ProtectHome=true"):
        assert line in unit
    (tmp_path / "config").mkdir()
    (tmp_path / "tmp").mkdir()
    shutil.copy(REPO / "config" / "diversified_leverage.toml", tmp_path / "config")
    script = (
        "import sys\n"
        "import alpaca.trading.client, alpaca.data.historical, apprise, psycopg\n"
        "import bot.daemon.live, bot.broker.alpaca, bot.data.alpaca, bot.notify.sender\n"
        "from bot.cli import main\n"
        "sys.exit(main(['run', '--config', 'config/diversified_leverage.toml',"
        " '--replay', '2024-01-02:2024-01-31']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "APCA_"))}
    env |= {"BOT_CACHE_DIR": str(tmp_path / "cache"), "HOME": "/nonexistent",
            "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.run(unit_sandbox.command([sys.executable, "-c", script], [tmp_path]),
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replay run 1:" in proc.stdout
    assert (tmp_path / "var" / "tradelog.sqlite").exists()


def test_the_image_pins_every_dependency_it_installs():
    """A rebuild months later resolves the same versions: the build stage wheels the
    package under deploy/constraints.txt, which pins each runtime dependency exactly."""
    import tomllib

    text = (REPO / "Dockerfile").read_text()
    assert "COPY deploy/constraints.txt ./constraints.txt" in text
    assert "pip wheel --no-cache-dir --constraint constraints.txt" in text
    pins = {}
    for line in (REPO / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()
        assert name in pins, f"{requirement}: not pinned in deploy/constraints.txt"
