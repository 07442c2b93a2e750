#!/usr/bin/env bash
# Build the bot's image and check that it starts the way the compose files run it:
# non-root, migrations applied, a replay end to end on the synthetic market, the default
# command refusing to start without keys (a clear message, a non-zero exit), and the
# health check reading the heartbeat file.
#
#   deploy/image-smoke-test.sh                  # base image from Docker Hub (the Dockerfile's)
#   deploy/image-smoke-test.sh --standin-base   # no registry: a Debian bookworm + Python 3.11
#                                               # base made with debootstrap from Debian's mirror
#
# Needs a running Docker engine; --standin-base also needs debootstrap (apt-get install
# debootstrap) and root. Not part of the test suite: CI has no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=leverbot:smoke
BUILD_ARGS=()

if [[ "${1:-}" == "--standin-base" ]]; then
    BASE=leverbot-base:bookworm-py311
    if ! docker image inspect "$BASE" > /dev/null 2>&1; then
        ROOTFS=$(mktemp -d)
        debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
            bookworm "$ROOTFS" http://deb.debian.org/debian
        # what python:3.11-slim gives: `python` and `pip` on the PATH, pip free to install
        rm -f "$ROOTFS"/usr/lib/python3.11/EXTERNALLY-MANAGED
        ln -sf python3 "$ROOTFS/usr/bin/python"
        ln -sf pip3 "$ROOTFS/usr/bin/pip"
        cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb
        tar -C "$ROOTFS" -c . | docker import - "$BASE"
        rm -rf "$ROOTFS"
    fi
    BUILD_ARGS=(--build-arg "PYTHON_IMAGE=$BASE")
fi

# Only what git tracks goes into the build: a stray .env or trade log never does.
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$CONTEXT"
docker build --network host "${BUILD_ARGS[@]}" -t "$IMAGE" "$CONTEXT"

fail() { echo "FAILED: $1" >&2; exit 1; }

[[ "$(docker run --rm "$IMAGE" id -u)" == "10001" ]] || fail "the image runs as the non-root user 10001"
docker run --rm "$IMAGE" bot --help > /dev/null || fail "bot --help"

out=$(docker run --rm "$IMAGE" sh -c \
    'bot db upgrade && bot run --replay 2024-01-02:2024-03-28 --config config/diversified_leverage.toml \
     && bot orders --limit 3 > /dev/null && echo replay-done')
{ grep -q "SYNTHETIC" <<< "$out" && grep -q "replay-done" <<< "$out"; } \
    || fail "migrations, a replay on the synthetic market and bot orders, in /app/var"

set +e
refused=$(docker run --rm "$IMAGE" 2>&1)
status=$?
set -e
{ [[ $status -ne 0 ]] && grep -q "APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set" <<< "$refused"; } \
    || fail "the default command without keys exits non-zero with a clear message"

set +e
docker run --rm "$IMAGE" bot health --max-age 300 > /dev/null 2>&1
stale=$?
docker run --rm "$IMAGE" sh -c 'touch /app/var/heartbeat && bot health --max-age 300' > /dev/null
fresh=$?
set -e
[[ $stale -ne 0 && $fresh -eq 0 ]] || fail "health: unhealthy without a heartbeat, healthy with a fresh one"
echo "image $IMAGE: all checks passed"
