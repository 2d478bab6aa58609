#!/usr/bin/env bash
# A scheduled (cron) run: join the cluster this machine belongs to and process whatever is new.
# Committed shards are skipped (exactly-once), new input files become new shards. The output's lease
# (OUTPUT/_lock) makes an overlapping run a clean skip: sdgen exits 3 without doing any work and
# this script exits 0 after saying so. Then it prints the run history's trend (OUTPUT/_runs/).
# Exit code: sdgen's (0 ok, 1 some shards failed, 2 bad config/input), 0 for a skipped run and for a
# run that stopped at its budget (exit 4: limits.max_worker_hours / max_wall_hours; the next
# scheduled run continues where it stopped).
#   0 * * * *  cd /opt/sdgen && jobs/scheduled_run.sh configs/nightly.yaml >> /var/log/sdgen.log 2>&1
# Python: $SDGEN_PYTHON, else the checkout's .venv, else python3 (sdgen installed).
set -uo pipefail
config="${1:?usage: jobs/scheduled_run.sh CONFIG [--set k=v ...]}"
shift
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${SDGEN_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py=python3; fi
fi
"$py" -m pipeline.cli run "$config" --set ray.address="${RAY_ADDRESS:-auto}" --no-progress "$@"
code=$?
if [ "$code" -eq 3 ]; then
  echo "scheduled_run: skipped: the previous run still holds the output's lease (see the line above)"
  code=0
elif [ "$code" -eq 4 ]; then
  echo "scheduled_run: stopped at its budget (see the summary above); the next scheduled run continues"
  code=0
fi
# the trend of the last runs (also after a skip: it shows how long the running one's predecessors took)
"$py" - "$config" "$@" <<'PY' || true
import sys

from pipeline.core.config import load
from pipeline.core.lease import history_trend
from pipeline.core.storage import Output

args = sys.argv[1:]
cfg = load(args[0], [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"])
print(history_trend(Output(cfg.output, cfg.storage)))
PY
exit "$code"
