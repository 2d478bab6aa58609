#!/usr/bin/env bash
# A scheduled (cron) run: join the cluster this machine belongs to and process whatever is new.
# Committed shards are skipped (exactly-once), new input files become new shards, and the exit code
# is non-zero when a shard failed, so the scheduler's alerting sees it.
#   0 * * * *  cd /opt/sdgen && jobs/scheduled_run.sh configs/nightly.yaml >> /var/log/sdgen.log 2>&1
set -euo pipefail
config="${1:?usage: jobs/scheduled_run.sh CONFIG [--set k=v ...]}"
shift
exec "$(dirname "$0")/../.venv/bin/sdgen" run "$config" --set ray.address="${RAY_ADDRESS:-auto}" --no-progress "$@"
