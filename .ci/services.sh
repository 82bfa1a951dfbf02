#!/usr/bin/env bash
# Check-and-start for every service the tests use, and Debian's Chromium for the browser tests.
# Idempotent and quick when everything is already up; safe to run on a fresh machine as root.
set -u

log() { echo "[services] $*"; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  log "starting rabbitmq"
  rabbitmq-server -detached || true
fi

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null || log "chromium install failed"
fi

# Prometheus' binaries only: the metrics tests start their own server on a free port with temp storage.
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
  log "installing prometheus (apt)"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    # Where init scripts run, the package starts a daemon on :9090 at boot and now: stop and disable it.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      /etc/init.d/prometheus stop >/dev/null 2>&1 || true
      update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  else
    log "prometheus install failed"
  fi
fi

# Amazon SQS: nothing to start here. The tests run moto (`moto[server]`, a package of the dev extra that
# `make install` installs) as a process of each test session on a free port (tests/conftest.py `sqs_url`,
# tests/support/moto_server.py): concurrent runs never share queues and nothing outlives a run.

# Wait (bounded) for every service to answer.
deadline=$((SECONDS + 90))
until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 \
   && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null \
   && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    log "a service did not come up in 90 s (redis, postgresql on 5432, rabbitmq on 5672)"
    exit 1
  fi
  sleep 1
done
exit 0
