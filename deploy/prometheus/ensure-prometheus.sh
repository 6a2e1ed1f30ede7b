#!/bin/sh
# Make sure `prometheus` and `promtool` are on PATH, installing Debian's package if not.
#
# Idempotent: when both commands are present it does nothing. The tests run their own
# Prometheus process on a free port with a temporary config, so the package's own
# service must not run: package scripts are told not to start it, and a service that
# was started anyway is stopped again.
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus/promtool missing and apt-get not found; install Prometheus 2.x" \
        "so that 'prometheus' and 'promtool' are on PATH" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# policy-rc.d exit code 101 means "action forbidden": package scripts start nothing.
POLICY=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    created_policy=yes
fi
cleanup() {
    if [ "$created_policy" = yes ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends prometheus; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends prometheus
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n 1
