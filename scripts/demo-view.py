#!/usr/bin/env python3
"""The live view of `make demo`: every stage's counters from its /metrics, every 2 seconds.

    scripts/demo-view.py bronze=9181 silver=9182 gold=9183 [--once]
"""
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
    return "\n".join(lines)


def main():
    args = [a for a in sys.argv[1:] if a != "--once"]
    stages = [(a.split("=")[0], int(a.split("=")[1])) for a in args]
    if "--once" in sys.argv:
        print(render(stages))
        return
    try:
        while True:
            out = render(stages)
            sys.stdout.write("\033[H\033[J" + out + "\n")
            sys.stdout.flush()
            time.sleep(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
