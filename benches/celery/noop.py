"""Celery no-op task throughput benchmark (Redis broker, optional Redis result backend).

Worker side:  BENCH_ACKS_LATE=1|0 BENCH_PREFETCH=64 celery -A noop worker -P prefork -c 2 -Q bench ...
Driver side:  python noop.py enqueue|restore|watch --mode results|noresult --n 50000   (run.sh calls these)
              python noop.py flush

Everything lives in Redis db 15; only db 15 is ever flushed.
"""
import argparse
import json
import os
import sys
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "bench"

app = Celery("noop", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    # acks_late is a worker-side decision (the worker reads task.acks_late), set per run.
    task_acks_late=os.environ.get("BENCH_ACKS_LATE", "1") == "1",
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "64")),
    worker_disable_rate_limits=True,  # as Celery's optimisation guide suggests
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
    # kombu's Redis transport caps its pool at 10 connections; with --pool gevent
    # and acks_late each concurrent ack takes one, and at -c 64 the worker fails
    # acks with "MaxConnectionsError: Too many connections" (tasks stay unacked)
    broker_transport_options={"visibility_timeout": 3600, "max_connections": 256},
    redis_max_connections=256,
)


@app.task(name="noop")
def noop():
    """Mode (a): the result (None, state SUCCESS, date_done) is stored in the Redis backend."""
    return None


@app.task(name="noop_ignore", ignore_result=True)
def noop_ignore():
    """Mode (b): no result stored."""
    return None


# ---------------------------------------------------------------- driver ----

def _redis():
    import redis
    r = redis.Redis.from_url(REDIS_URL)
    # this script flushes its database: never let that be anything but db 15
    assert r.connection_pool.connection_kwargs.get("db") == 15, "BENCH_REDIS_URL must use db 15"
    return r


def cmd_flush(_args):
    _redis().flushdb()  # db 15 only (from REDIS_URL)


CACHE = os.path.expanduser(os.environ.get("BENCH_CACHE", "~/.cache/tributary-celery-bench"))


def _backlog_file(args):
    return os.path.join(CACHE, f"backlog-{args.mode}-{args.n}.json")


def cmd_enqueue(args):
    """Flush db 15 and enqueue N tasks through Celery's own client (apply_async).

    With --save, also keep a server-side DUMP of the resulting queue so later
    configurations can start from the identical backlog (cmd_restore) without
    paying ~20 s of enqueueing each time.
    """
    _redis().flushdb()  # db 15 only
    task = noop if args.mode == "results" else noop_ignore
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(args.n):
            task.apply_async(producer=producer)
    dt = time.perf_counter() - t0
    r = _redis()
    qlen = r.llen(QUEUE)
    print(json.dumps({"enqueued": args.n, "queue_len": qlen, "enqueue_s": round(dt, 2),
                      "enqueue_per_s": round(args.n / dt)}))
    if qlen != args.n:
        sys.exit(f"queue holds {qlen}, expected {args.n}")
    if args.save:
        os.makedirs(CACHE, exist_ok=True)
        dumps = {k.decode(): r.dump(k).hex() for k in r.keys("*")}
        with open(_backlog_file(args), "w") as f:
            json.dump(dumps, f)


def cmd_restore(args):
    """Flush db 15 and restore the backlog saved by `enqueue --save` (same messages, same ids)."""
    r = _redis()
    r.flushdb()  # db 15 only
    with open(_backlog_file(args)) as f:
        dumps = json.load(f)
    for k, v in dumps.items():
        r.restore(k, 0, bytes.fromhex(v))
    qlen = r.llen(QUEUE)
    print(json.dumps({"restored": qlen}))
    if qlen != args.n:
        sys.exit(f"queue holds {qlen}, expected {args.n}")


def cmd_watch(args):
    """Poll queue length + kombu's 'unacked' hash every --interval s.

    A task counts as done when its message has left both the queue list and the
    unacked hash, i.e. when it was acked. With acks_late=True that is after the
    task ran and its result was stored; with acks_late=False the ack happens when
    the worker hands the task to the pool, just before it runs (a no-op).
    Clock: first poll that sees fewer than N outstanding -> first poll that sees 0.
    """
    r = _redis()
    n = args.n
    deadline = time.monotonic() + args.timeout
    t_first = None
    last_outstanding, last_change = None, time.monotonic()
    while True:
        p = r.pipeline(transaction=False)
        p.llen(QUEUE)
        p.hlen("unacked")
        qlen, unacked = p.execute()
        outstanding = qlen + unacked
        now = time.monotonic()
        if t_first is None and outstanding < n:
            t_first, done_first = now, n - outstanding
            cpu_first, grp_first = _cpu_ticks(), _cpu_by_group()
        if outstanding == 0:
            t_last = now
            cpu_last, grp_last = _cpu_ticks(), _cpu_by_group()
            break
        if outstanding != last_outstanding:
            last_outstanding, last_change = outstanding, now
        if now > deadline or (t_first is not None and now - last_change > args.stall):
            print(json.dumps({"error": "timeout or stalled", "outstanding": outstanding}))
            sys.exit(1)
        time.sleep(args.interval)
    elapsed = t_last - t_first
    # the first poll already saw done_first tasks finished; count the rest over the window
    rate = (n - done_first) / elapsed if elapsed > 0 else float("nan")
    busy = cpu_last[0] - cpu_first[0]
    total = cpu_last[1] - cpu_first[1]
    out = {"n": n, "elapsed_s": round(elapsed, 3), "tasks_per_s": round(rate),
           # whole machine (both cores, every process) while the worker drained the queue
           "machine_cpu_busy_pct": round(100 * busy / total) if total else None}
    # share of the machine (100% = both cores) taken by the worker's processes,
    # redis-server, this watcher, and everything else (e.g. a build running alongside)
    if total:
        used = {g: grp_last.get(g, 0) - grp_first.get(g, 0) for g in ("worker", "redis", "watch")}
        used["other"] = max(0, busy - sum(used.values()))
        out.update({f"cpu_{g}_pct": round(100 * v / total) for g, v in used.items()})
    if args.mode == "results":
        out.update(_results_check(r, n))
    print(json.dumps(out))


def _cpu_ticks():
    """(busy, total) jiffies over all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def _cpu_by_group():
    """utime+stime jiffies of this benchmark's processes, read from /proc."""
    groups = {}
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if int(pid) == me:
            g = "watch"
        elif b"-A noop worker" in cmd:  # worker main process and its prefork children
            g = "worker"
        elif b"redis-server" in cmd:
            g = "redis"
        else:
            continue
        groups[g] = groups.get(g, 0) + ticks
    return groups


def _results_check(r, n):
    """Cross-check from the result backend: count SUCCESS metas, span of date_done."""
    from datetime import datetime
    keys = list(r.scan_iter("celery-task-meta-*", count=5000))
    dates, ok = [], 0
    for i in range(0, len(keys), 5000):
        for raw in r.mget(keys[i:i + 5000]):
            if raw is None:
                continue
            meta = json.loads(raw)
            ok += meta.get("status") == "SUCCESS"
            dates.append(datetime.fromisoformat(meta["date_done"]))
    res = {"results_success": ok}
    if len(dates) == n and n > 1:
        span = (max(dates) - min(dates)).total_seconds()
        res["backend_span_s"] = round(span, 3)
        res["backend_tasks_per_s"] = round((n - 1) / span) if span > 0 else None
    return res


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("flush").set_defaults(fn=cmd_flush)
    for name, fn in (("enqueue", cmd_enqueue), ("restore", cmd_restore), ("watch", cmd_watch)):
        p = sub.add_parser(name)
        p.add_argument("--mode", choices=["results", "noresult"], required=True)
        p.add_argument("--n", type=int, default=50_000)
        p.add_argument("--interval", type=float, default=0.01)
        p.add_argument("--timeout", type=float, default=240)
        p.add_argument("--stall", type=float, default=15, help="give up after this long without progress")
        p.add_argument("--save", action="store_true")
        p.set_defaults(fn=fn)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
