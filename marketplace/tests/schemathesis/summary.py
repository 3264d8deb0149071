#!/usr/bin/env python3
"""Figures of one schemathesis run, from its NDJSON report.

Usage: summary.py REPORT.ndjson LABEL [TOTALS.json]

Prints the operations tested, the test cases generated, the requests sent,
the answers by status, the server errors (5xx) and the failed checks; adds
them to TOTALS.json when given. Exits 1 when a check failed or the API
answered a 5xx.
"""

import collections
import json
import sys


def main() -> int:
    report, label = sys.argv[1], sys.argv[2]
    totals_path = sys.argv[3] if len(sys.argv) > 3 else None

    operations = set()
    cases = 0
    requests = 0
    statuses = collections.Counter()
    server_errors = []
    failures = collections.Counter()
    errors = 0
    with open(report, encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            if "NonFatalError" in event or "FatalError" in event:
                errors += 1
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            if finished.get("status") != "skip" and recorder["label"] != "Stateful tests":
                operations.add(recorder["label"])
            cases += len(recorder.get("cases", {}))
            for interaction in recorder.get("interactions", {}).values():
                requests += 1
                response = interaction.get("response")
                if not response:
                    continue
                status = response["status_code"]
                statuses[status] += 1
                if status >= 500:
                    request = interaction["request"]
                    server_errors.append(f"{status} {request['method']} {request['uri']}")
            for checks in recorder.get("checks", {}).values():
                for check in checks:
                    if check.get("status") == "failure":
                        failures[check["name"]] += 1

    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    print(f"--- {label}")
    print(f"operations tested: {len(operations)}")
    print(f"test cases: {cases}")
    print(f"requests: {requests} ({by_status})")
    print(f"server errors (5xx): {len(server_errors)}")
    for line in server_errors[:20]:
        print(f"  {line}")
    print(f"failed checks: {sum(failures.values())}"
          + "".join(f"\n  {name}: {count}" for name, count in sorted(failures.items())))
    print(f"run errors: {errors}")

    if totals_path:
        try:
            with open(totals_path, encoding="utf-8") as file:
                totals = json.load(file)
        except FileNotFoundError:
            totals = {"runs": 0, "cases": 0, "requests": 0, "server_errors": 0, "failures": 0, "errors": 0}
        totals["runs"] += 1
        totals["cases"] += cases
        totals["requests"] += requests
        totals["server_errors"] += len(server_errors)
        totals["failures"] += sum(failures.values())
        totals["errors"] += errors
        with open(totals_path, "w", encoding="utf-8") as file:
            json.dump(totals, file)

    return 1 if server_errors or failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
