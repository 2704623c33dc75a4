#!/usr/bin/env bash
# Celery no-op throughput on a 50,000-task Redis backlog. See README.md.
#
#   benches/celery/run.sh                 # default matrix, about 4-5 minutes
#   N=20000 benches/celery/run.sh         # smaller backlog
#   CONFIGS="results:prefork:2:1:64 noresult:solo:1:0:64" benches/celery/run.sh
#
# A config is  mode:pool:concurrency:acks_late(1|0):prefetch_multiplier
# Uses Redis db 15 only (flushed before every config and at the end).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the repo (the worker imports noop.py from here)

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${BENCH_CACHE:-$HOME/.cache/tributary-celery-bench}"
VENV="$CACHE/venv"
N="${N:-50000}"
CONFIGS="${CONFIGS:-results:prefork:2:1:64 results:prefork:2:0:64 results:solo:1:1:64 results:threads:4:1:64 noresult:prefork:2:1:64 noresult:prefork:2:0:64 noresult:solo:1:0:64}"

if [ ! -x "$VENV/bin/celery" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
fi
PY="$VENV/bin/python"
cd "$HERE"

WORKER_PID=""
cleanup() {
  if [ -n "$WORKER_PID" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  "$PY" noop.py flush || true
}
trap cleanup EXIT

"$PY" -c 'import celery, kombu, redis, platform; print(f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, Python {platform.python_version()}")'
echo "redis-server $(redis-cli -h 127.0.0.1 info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p'), $(nproc) cores, N=$N"

# One fresh backlog per mode, enqueued through Celery's own client (apply_async);
# every config of that mode then starts from an identical copy of it (DUMP/RESTORE),
# so a config's number does not depend on what ran before it.
for mode in results noresult; do
  case " $CONFIGS " in *" $mode:"*)
    echo -n "enqueue $mode: "; "$PY" noop.py enqueue --mode "$mode" --n "$N" --save ;;
  esac
done

printf '\n%-9s %-8s %4s %9s %8s %8s %9s   %s\n' mode pool conc acks_late prefetch tasks/s backend/s "cpu% of 2 cores: worker/redis/watch/other"
for cfg in $CONFIGS; do
  IFS=: read -r mode pool conc late prefetch <<<"$cfg"
  "$PY" noop.py restore --mode "$mode" --n "$N" >/dev/null
  # the watcher starts first, so it sees the first ack; the clock runs from the
  # first ack it sees to the poll that finds queue + unacked empty
  "$PY" noop.py watch --mode "$mode" --n "$N" >"$CACHE/watch.json" &
  WATCH_PID=$!
  BENCH_ACKS_LATE="$late" BENCH_PREFETCH="$prefetch" \
    "$VENV/bin/celery" -A noop worker -P "$pool" -c "$conc" -Q bench -l WARNING \
      --without-gossip --without-mingle --without-heartbeat -n "bench@%h" \
      >"$CACHE/worker-$mode-$pool-$conc-$late-$prefetch.log" 2>&1 &
  WORKER_PID=$!
  wait "$WATCH_PID" || { echo "watch failed: $(cat "$CACHE/watch.json")"; exit 1; }
  kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || true; WORKER_PID=""
  "$PY" - "$mode" "$pool" "$conc" "$late" "$prefetch" "$CACHE/watch.json" <<'EOF'
import json, sys
mode, pool, conc, late, prefetch, path = sys.argv[1:]
w = json.load(open(path))
print(f"{mode:<9} {pool:<8} {conc:>4} {('True' if late == '1' else 'False'):>9} {prefetch:>8} "
      f"{w['tasks_per_s']:>8} {str(w.get('backend_tasks_per_s', '-')):>9}   "
      f"{w['cpu_worker_pct']}/{w['cpu_redis_pct']}/{w['cpu_watch_pct']}/{w['cpu_other_pct']}", flush=True)
EOF
done
echo "(tasks/s: acks seen by polling LLEN+HLEN unacked every 10 ms; backend/s: span of date_done in"
echo " the result backend; cpu%: share of both cores (100 = both busy) while draining, by the worker's"
echo " processes, redis-server, the 10 ms poller, and everything else on the machine)"
