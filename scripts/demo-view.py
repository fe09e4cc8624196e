#!/usr/bin/env python3
"""The live view of `make demo`: every stage's counters from its /metrics, and the latest
gold numbers of a few orgs from PostgreSQL (through psql, when DEMO_DATABASE is set), every
2 seconds.

    scripts/demo-view.py bronze=9181 silver=9182 gold=9183 [--once] [--seconds N]
"""
import os
import shutil
import subprocess
import sys
import time
import urllib.request

COLUMNS = [
    ("in", "kafka_messages_in_total"),
    ("processed", "adpipe_events_processed_total"),
    ("dead-lettered", "adpipe_events_dead_lettered_total"),
    ("deduplicated", "adpipe_events_deduplicated_total"),
    ("quarantined", "adpipe_rows_quarantined_total"),
    ("produced", "adpipe_records_produced_total"),
    ("alerts", "adpipe_alerts_total"),
    ("notified", "adpipe_notifications_sent_total"),
    ("lag", "kafka_consumer_lag"),
]


def scrape(port):
    """Counter sums by metric name, or None when the stage does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            pass
    return sums


PROCESSED = "adpipe_events_processed_total"

# Per org, gold's latest day: campaigns, impressions, spend, and pacing of the booked ones.
GOLD_SQL = """
WITH last AS (SELECT org_id, max(day) AS day FROM gold_days GROUP BY org_id)
SELECT d.org_id, d.day, count(DISTINCT d.campaign_id), sum(d.impressions), sum(d.spend),
       sum(d.rows)
FROM gold_days d JOIN last USING (org_id, day)
GROUP BY d.org_id, d.day ORDER BY d.org_id LIMIT 5
"""


def gold_numbers():
    """Lines for the gold panel, or a note why there are none."""
    database = os.environ.get("DEMO_DATABASE")
    if not database:
        return []
    if not shutil.which("psql"):
        return ["", "gold: (psql not found; install postgresql-client to see gold's numbers)"]
    try:
        out = subprocess.run(
            ["psql", database, "-At", "-F", "\t", "-c", GOLD_SQL],
            capture_output=True, text=True, timeout=3,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ["", "gold: (PostgreSQL did not answer)"]
    if out.returncode != 0:
        return ["", "gold: (no aggregates yet)"]
    lines = ["", f"{'gold, latest day':<20}{'org':>6}{'day':>12}{'campaigns':>11}"
             f"{'impressions':>14}{'spend':>14}{'rows':>8}"]
    for row in out.stdout.splitlines():
        org, day, campaigns, impressions, spend, rows = row.split("\t")
        lines.append(f"{'':<20}{org:>6}{day:>12}{campaigns:>11}{int(impressions):>14,}"
                     f"{float(spend):>14,.2f}{rows:>8}")
    if len(lines) == 2:
        lines.append(f"{'':<20}(no aggregates yet)")
    return lines
_last = {}


def render(stages):
    head = f"{'stage':<20}{'per second':>12}" + "".join(f"{c:>15}" for c, _ in COLUMNS)
    lines = [time.strftime("adpipe demo — %H:%M:%S (Ctrl-C stops the stages)"), "", head]
    now = time.monotonic()
    for name, port in stages:
        m = scrape(port)
        if m is None:
            lines.append(f"{name:<20}{'(not answering on :' + str(port) + ')':>30}")
            continue
        done = m.get(PROCESSED, 0.0)
        before = _last.get(name)
        rate = (done - before[1]) / (now - before[0]) if before and now > before[0] else 0.0
        _last[name] = (now, done)
        lines.append(
            f"{name:<20}{rate:>12.1f}" + "".join(f"{int(m.get(k, 0)):>15}" for _, k in COLUMNS)
        )
    return "\n".join(lines + gold_numbers())


def main():
    argv = sys.argv[1:]
    seconds = None
    if "--seconds" in argv:
        i = argv.index("--seconds")
        seconds = float(argv[i + 1])
        del argv[i:i + 2]
    args = [a for a in argv if a != "--once"]
    stages = [(a.split("=")[0], int(a.split("=")[1])) for a in args]
    if "--once" in argv:
        print(render(stages))
        return
    end = time.monotonic() + seconds if seconds is not None else None
    try:
        while end is None or time.monotonic() < end:
            out = render(stages)
            sys.stdout.write("\033[H\033[J" + out + "\n")
            sys.stdout.flush()
            time.sleep(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
