"""Deployment files: what can be checked without Docker."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO


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
    assert "FROM python:3.11-slim" in text
    assert re.search(r"^USER leverbot$", text, re.M)
    assert "HEALTHCHECK" in text and '"bot", "health"' in text
    assert "COPY . " not in text  # only what the image needs


def test_systemd_unit_restarts_and_is_hardened():
    text = (REPO / "deploy" / "bot.service").read_text()
    for line in ("Restart=on-failure", "KillSignal=SIGTERM", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "User=leverbot", "EnvironmentFile=/etc/leverbot/env"):
        assert line in text
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
    (`bot serve`) in the `platform` profile, all on the one PostgreSQL trade log; secrets
    only as variables from deploy/.env."""
    text = (REPO / "deploy" / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    platform = ("rabbitmq", "redis", "scheduler", "workers", "api")
    assert all(services[name]["profiles"] == ["platform"] for name in platform)
    assert "profiles" not in services["db"] and "profiles" not in services["bot"]
    for name in platform:
        assert services[name]["restart"] == "unless-stopped"

    scheduler, workers, api = services["scheduler"], services["workers"], services["api"]
    assert "bot run --platform" in " ".join(scheduler["command"])
    assert "bot db upgrade" in " ".join(scheduler["command"])
    assert workers["command"][:2] == ["bot", "worker"] and workers["deploy"]["replicas"] == 2
    assert api["command"][:2] == ["bot", "serve"] and api["ports"] == ["127.0.0.1:8000:8000"]
    for service in (scheduler, workers, api):
        env = service["environment"]
        assert env["BOT_DATABASE_URL"] == services["bot"]["environment"]["BOT_DATABASE_URL"]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        assert service["read_only"] is True
    for service in (scheduler, workers):
        assert service["environment"]["BOT_QUEUE_URL"].startswith("amqp://leverbot:${RABBITMQ_PASSWORD}@rabbitmq:")
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert workers["environment"]["BOT_REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0"
    assert workers["depends_on"]["redis"]["condition"] == "service_healthy"
    assert workers["env_file"] == [".env"]  # the Broker API keys
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD")
    assert "--requirepass" in services["redis"]["command"]
    example = (REPO / "deploy" / ".env.example").read_text()
    for variable in ("APCA_BROKER_API_KEY", "RABBITMQ_PASSWORD", "REDIS_PASSWORD",
                     "BOT_BROKER_REQUESTS_PER_MINUTE"):
        assert variable in example
    assert not re.search(r"(SECRET|PASSWORD|KEY_ID|PASS)\s*[:=]\s*[A-Za-z0-9]{6,}", text)


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="docker compose not installed")
def test_docker_compose_config_accepts_the_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("POSTGRES_PASSWORD=x\nRABBITMQ_PASSWORD=y\nREDIS_PASSWORD=z\n")
    proc = subprocess.run(["docker", "compose", "-f", str(REPO / "deploy" / "docker-compose.yml"),
                           "--env-file", str(env), "--profile", "platform", "config", "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
