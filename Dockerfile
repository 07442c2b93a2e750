# leverbot: the trading daemon. Slim image, non-root, healthcheck on the daemon's heartbeat.
# The base is pinned to a Python release and a Debian release, the same in both stages:
# `python:3.11-slim` follows whatever Debian is current (it moved from bookworm to
# trixie), so a rebuild months later changed the system under the bot. Raise it on
# purpose; for byte-for-byte rebuilds add the digest (`docker pull`, then @sha256:...).
# PYTHON_IMAGE swaps the base without editing this file (a mirror, or the stand-in that
# deploy/image-smoke-test.sh builds where Docker Hub is out of reach).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
# The dependency versions the image was tested with (a rebuild must not pick up newer ones)
COPY deploy/constraints.txt ./constraints.txt
COPY bot ./bot
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --constraint constraints.txt --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BOT_LOG_FORMAT=json \
    BOT_HEARTBEAT_FILE=/app/var/heartbeat
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin leverbot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config ./config
RUN mkdir -p /app/var && chown leverbot:leverbot /app/var
USER leverbot
VOLUME ["/app/var"]
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
  CMD ["bot", "health", "--max-age", "300"]
# Paper trading by default; live needs --live and BOT_LIVE_CONFIRM=yes.
CMD ["sh", "-c", "bot db upgrade && exec bot run --config config/diversified_leverage.toml"]
