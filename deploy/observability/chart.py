#!/usr/bin/env python3
"""Draws the dashboard's panels from a load run, without Prometheus or Grafana.

Runs a small write and read load against a running API for --seconds (users,
books, offers, orders, reads, and a few offers for books that do not exist,
which are dead-lettered; a burst in the middle), scrapes the API's and the
worker's /metrics every second meanwhile, then draws the panels of
grafana/dashboards/marketplace.json from the scrapes: rates and quantiles
are computed as Prometheus would (counter deltas, `histogram_quantile` over
the bucket deltas) over a sliding window of --window seconds.

    pip install matplotlib
    METRICS_CHART=docs/operations/dashboard.png marketplace/tests/metrics/check.sh

(check.sh starts the API and a worker on RabbitMQ and PostgreSQL and calls
this script), or against any running pair:

    python3 deploy/observability/chart.py --api http://127.0.0.1:8080 \\
        --worker http://127.0.0.1:8081 --seconds 90 --out dashboard.png
"""

import argparse
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict

SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value} of a Prometheus text scrape."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SERIES.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
        except ValueError:
            pass
    return samples


def fetch(url, method="GET", body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


class Load:
    """Writers and readers against the API until `stop` is set.

    A write is answered once accepted and applied a little later: what a
    later write refers to (the seller and the book of an offer, the offer of
    an order) is used only once a read has seen it, as a client would.
    Only the offers meant for books that never come (3%) are dead-lettered.
    """

    def __init__(self, api):
        self.api = api
        self.pending = {"user": [], "book": [], "offer": []}
        self.seen = {"user": [], "book": [], "offer": []}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def pick(self, kind):
        with self.lock:
            items = self.seen[kind][-500:]
            return random.choice(items) if items else None

    def wrote(self, kind, item):
        with self.lock:
            self.pending[kind].append(item)

    def confirm(self):
        """Reads one pending item back; once it is there, writes may use it."""
        with self.lock:
            kinds = [kind for kind, items in self.pending.items() if items]
            if not kinds:
                return False
            kind = random.choice(kinds)
            item = self.pending[kind].pop(0)
        if kind == "user":
            found = fetch(f"{self.api}/users/{item}")[0] == 200
        elif kind == "book":
            found = fetch(f"{self.api}/books/{item}")[0] == 200
        else:
            offer, book = item
            status, body = fetch(f"{self.api}/offers/{book}")
            found = status == 200 and offer.encode() in body
        with self.lock:
            (self.seen if found else self.pending)[kind].append(item)
        return True

    def step(self):
        api, roll = self.api, random.random()
        user, book = self.pick("user"), self.pick("book")
        if (user is None or book is None) and random.random() < 0.5 and self.confirm():
            return
        if roll < 0.10 or user is None:
            user = str(uuid.uuid4())
            fetch(f"{api}/user", "PUT", {"id": user, "name": f"Seller {user[:8]}"})
            self.wrote("user", user)
        elif roll < 0.22 or book is None:
            book = str(uuid.uuid4())
            fetch(f"{api}/book", "PUT", {"id": book, "title": f"Book {book[:8]}", "author": "A. Writer"})
            self.wrote("book", book)
        elif roll < 0.36:
            offer, missing = str(uuid.uuid4()), random.random() < 0.03
            if missing:
                book = str(uuid.uuid4())  # a book that never comes: dead-lettered
            body = {"id": offer, "bookId": book, "sellerId": user,
                    "price": round(random.uniform(3, 40), 2), "stock": random.randint(1, 50)}
            if fetch(f"{api}/offer", "POST", body)[0] == 200 and not missing:
                self.wrote("offer", (offer, book))
        elif roll < 0.46 and self.pick("offer") is not None:
            items = [{"offerId": self.pick("offer")[0], "quantity": 1}]
            fetch(f"{api}/order", "POST", {"id": str(uuid.uuid4()), "userId": user, "items": items})
        elif roll < 0.65 and self.confirm():
            pass
        elif roll < 0.8:
            fetch(f"{api}/books/{book}")
        elif roll < 0.92:
            fetch(f"{api}/offers/{book}")
        else:
            fetch(f"{api}/books?limit=20")

    def run(self, pause):
        while not self.stop.is_set():
            self.step()
            if pause():
                time.sleep(pause())


def scrape_loop(targets, seconds, scrapes):
    started = time.monotonic()
    while (now := time.monotonic() - started) < seconds:
        row = {"t": now}
        for role, url in targets.items():
            status, body = fetch(f"{url}/metrics")
            row[role] = parse(body.decode()) if status == 200 else {}
        scrapes.append(row)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started - now)))


def select(samples, name, **match):
    for (series, labels), value in samples.items():
        if series == name and all((key, want) in labels for key, want in match.items()):
            yield dict(labels), value


def grouped(samples, name, by, **match):
    sums = defaultdict(float)
    for labels, value in select(samples, name, **match):
        sums[tuple(labels.get(key, "") for key in by)] += value
    return sums


def quantile(q, buckets):
    """Prometheus' histogram_quantile over {le: cumulative count}."""
    points = sorted((float("inf") if le == "+Inf" else float(le), count) for le, count in buckets.items())
    if not points or points[-1][1] <= 0:
        return None
    rank = q * points[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def windows(scrapes, window):
    """(t, older, newer) pairs `window` seconds apart."""
    for index, row in enumerate(scrapes):
        older = next((s for s in scrapes[: index + 1] if row["t"] - s["t"] <= window), None)
        if older is not None and older is not row:
            yield row["t"], older, row


def rates(scrapes, window, role, name, by, **match):
    series = defaultdict(list)
    for t, older, newer in windows(scrapes, window):
        before = grouped(older[role], name, by, **match)
        for key, value in grouped(newer[role], name, by, **match).items():
            series[key].append((t, max(0.0, value - before.get(key, 0.0)) / (newer["t"] - older["t"])))
    return series


def quantiles(scrapes, window, role, name, q, by=(), **match):
    series = defaultdict(list)
    for t, older, newer in windows(scrapes, window):
        before = grouped(older[role], f"{name}_bucket", (*by, "le"), **match)
        now = grouped(newer[role], f"{name}_bucket", (*by, "le"), **match)
        per_key = defaultdict(dict)
        for key, value in now.items():
            per_key[key[:-1]][key[-1]] = value - before.get(key, 0.0)
        for key, buckets in per_key.items():
            value = quantile(q, buckets)
            if value is not None:
                series[key].append((t, value))
    return series


def gauges(scrapes, role, name, by, **match):
    series = defaultdict(list)
    for row in scrapes:
        for key, value in grouped(row[role], name, by, **match).items():
            series[key].append((row["t"], value))
    return series


def draw(scrapes, window, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(5, 2, figsize=(16, 22))
    figure.suptitle("Marketplace — one load run, scraped every second (API and worker /metrics)", fontsize=15)

    def plot(ax, title, series, unit, label=lambda key: " ".join(k for k in key if k) or "all", top=12):
        ranked = sorted(series.items(), key=lambda item: -max((v for _, v in item[1]), default=0))[:top]
        for key, points in ranked:
            if points:
                ax.plot([t for t, _ in points], [v for _, v in points], label=label(key), linewidth=1.3)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(unit)
        ax.set_xlabel("seconds into the run")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if ranked:
            ax.legend(fontsize=7, loc="upper left")

    request = "http_server_request_duration_seconds"
    plot(axes[0][0], "Requests per second by route", rates(scrapes, window, "api", f"{request}_count", ("http_route",)), "req/s")
    plot(axes[0][1], "p99 latency by route", quantiles(scrapes, window, "api", request, 0.99, ("http_route",)), "seconds")
    critical = "marketplace_critical_time_seconds"
    both = {("p50",): quantiles(scrapes, window, "worker", critical, 0.5)[()],
            ("p99",): quantiles(scrapes, window, "worker", critical, 0.99)[()]}
    plot(axes[1][0], "Critical time (accepted at the API until applied)", both, "seconds")
    outcomes = rates(scrapes, window, "worker", "messaging_process_duration_seconds_count",
                     ("messaging_destination_name", "outcome"))
    plot(axes[1][1], "Handler outcomes by message type", outcomes, "per second",
         label=lambda key: f"{key[0].removeprefix('marketplace.')} {key[1]}")
    short = lambda key: key[0].split(".command.")[-1].split(".event.")[-1]  # noqa: E731
    depths = gauges(scrapes, "worker", "marketplace_queue_messages", ("messaging_destination_name", "queue_kind"))
    plot(axes[2][0], "Command and event queue depths (every 15 s)",
         {k: v for k, v in depths.items() if k[1] != "dead_letter"}, "messages", label=short)
    plot(axes[2][1], "Dead-letter queue depths (every 15 s)",
         {k: v for k, v in depths.items() if k[1] == "dead_letter"}, "messages", label=short)
    plot(axes[3][0], "Outbox backlog (rows not relayed)", gauges(scrapes, "worker", "marketplace_outbox_backlog_rows", ()), "rows")
    plot(axes[3][1], "Outbox oldest row age", gauges(scrapes, "worker", "marketplace_outbox_oldest_age_seconds", ()), "seconds")
    paused = gauges(scrapes, "worker", "marketplace_consumer_paused", ("reason",))
    plot(axes[4][0], "Consumers paused (by reason)", paused, "consumers")
    axes[4][0].set_ylim(top=max(1.0, max((v for s in paused.values() for _, v in s), default=0) + 1))
    pool = {}
    for role in ("api", "worker"):
        for key, points in gauges(scrapes, role, "db_client_connections_usage",
                                  ("db_client_connection_state",)).items():
            pool[(role, *key)] = points
        for key, points in quantiles(scrapes, 30, role, "db_client_connection_wait_time_seconds", 0.99).items():
            pool[(role, "wait p99 (s, probe)")] = points
    plot(axes[4][1], "Database pool: connections by state, wait p99", pool, "connections / seconds")
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(out, dpi=80)
    print(f"chart: {out} ({len(scrapes)} scrapes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--window", type=float, default=10, help="rate and quantile window, seconds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    scrapes = []
    scraper = threading.Thread(target=scrape_loop, args=({"api": args.api, "worker": args.worker}, args.seconds, scrapes))
    scraper.start()
    load = Load(args.api)
    started = time.monotonic()
    # Two steady clients, and four more in the middle third: a burst.
    steady = [threading.Thread(target=load.run, args=(lambda: 0.02,)) for _ in range(2)]
    burst_on = lambda: args.seconds / 3 < time.monotonic() - started < 2 * args.seconds / 3  # noqa: E731
    burst = [threading.Thread(target=load.run, args=(lambda: 0 if burst_on() else 0.2,)) for _ in range(4)]
    for thread in steady + burst:
        thread.start()
    scraper.join()
    load.stop.set()
    for thread in steady + burst:
        thread.join()
    draw(scrapes, args.window, args.out)


if __name__ == "__main__":
    main()
