"""``pip-audit`` over the project's environment, made robust for ``make test``.

* Fails (exit 1) on any known vulnerability, naming the package and the fixed versions.
* Retries when the vulnerability service cannot be reached (3 tries, growing pauses); if it
  stays unreachable, says so loudly and passes, so a network outage does not fail the build
  (``CAROUSEL_AUDIT_STRICT=1`` makes that, and any package it could not audit, a failure).
* Prints how many packages were really audited: a registry that does not serve PyPI's
  per-version JSON makes pip-audit skip packages silently, and that must be visible.

    .venv/bin/python tests/security/pip_audit.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

TRIES = 3
COMMAND = [
    sys.executable,
    "-m",
    "pip_audit",
    "--format",
    "json",
    "--progress-spinner",
    "off",
    "--skip-editable",  # the project itself is not on PyPI
    "--timeout",
    "30",
]


def main() -> int:
    strict = os.environ.get("CAROUSEL_AUDIT_STRICT") == "1"
    report = None
    for attempt in range(1, TRIES + 1):
        try:
            done = subprocess.run(COMMAND, capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            done = None
        # pip-audit exits 0 (clean) or 1 (vulnerabilities) with a JSON report on stdout.
        if done is not None and done.returncode in (0, 1) and done.stdout.lstrip().startswith("{"):
            report = json.loads(done.stdout)
            break
        detail = "timed out" if done is None else (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"pip-audit: try {attempt}/{TRIES} failed: {detail}", file=sys.stderr)
        if attempt < TRIES:
            time.sleep(5 * attempt)
    if report is None:
        print("pip-audit: WARNING: the vulnerability service could not be reached", file=sys.stderr)
        return 1 if strict else 0
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(
                f"pip-audit: {dependency['name']} {dependency['version']}: {vuln['id']} "
                f"(fixed in {fixes})",
                file=sys.stderr,
            )
    print(summary(len(dependencies), audited, vulnerable, skipped))
    if vulnerable:
        return 1
    return 1 if strict and skipped else 0


def summary(
    total: int, audited: int, vulnerable: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> str:
    """One line that says what was really checked: "0 of 84 audited" is not a clean bill."""
    found = f"{len(vulnerable)} vulnerable" if vulnerable else "none vulnerable"
    if not skipped:
        return f"pip-audit: all {total} packages audited, {found}"
    reason = skipped[0]["skip_reason"]
    if not audited:
        return (
            f"pip-audit: WARNING: audited 0 of {total} packages, so nothing was checked: the "
            f"package index gave no vulnerability data (e.g. {reason})"
        )
    return (
        f"pip-audit: {audited} of {total} packages audited, {found}; WARNING: "
        f"{len(skipped)} could not be audited (e.g. {reason})"
    )


if __name__ == "__main__":
    sys.exit(main())
