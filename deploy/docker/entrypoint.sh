#!/bin/sh
# The app container: a Ray head with a fixed metrics port (Prometheus scrapes it) and the
# dashboard on every interface, then the Serve applications. `adfunnel run` turns the
# SIGTERM of `docker stop` into the drain of SPEC §5 (requests finish, batches commit).
set -eu
ray start --head \
    --port="${RAY_GCS_PORT:-6380}" \
    --metrics-export-port="${RAY_METRICS_EXPORT_PORT:-8080}" \
    --dashboard-host=0.0.0.0 \
    --num-cpus="${RAY_NUM_CPUS:-2}" \
    --disable-usage-stats
export RAY_ADDRESS="127.0.0.1:${RAY_GCS_PORT:-6380}"
exec adfunnel run "${SERVE_CONFIG:-config/container.yaml}"
