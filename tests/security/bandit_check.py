"""``bandit`` over the package for ``make test``, with one line of output when it is clean.

bandit logs a WARNING for every node of a line it checks that carries ``# nosec BXXX``
without failing that test ("nosec encountered (B608), but no failed test": an f-string's
other parts, say), and for each word after ``nosec`` that is not a test id ("Test in
comment: crypto ..."). Neither is a finding, and there is no flag to quiet them; a dozen
of them buried the result. This runs bandit, sets those notes aside (counted, and shown by
``--notes``), and prints every real finding in full: it fails exactly when bandit does.

    .venv/bin/python tests/security/bandit_check.py [--notes]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

TARGET = "carousel_gateway"
CONFIG = Path(__file__).with_name("bandit.yaml")
#: bandit's log lines that are notes about ``# nosec`` comments, not findings.
NOTES = re.compile(r"nosec encountered \(B\d+\), but no failed test|Test in comment: ")


def main(argv: list[str]) -> int:
    command = [sys.executable, "-m", "bandit", "-q", "-r", TARGET, "-c", str(CONFIG)]
    done = subprocess.run(
        [*command, "-f", "json"], capture_output=True, text=True, timeout=600, check=False
    )
    notes = [line for line in done.stderr.splitlines() if NOTES.search(line)]
    other = [line for line in done.stderr.splitlines() if line.strip() and line not in notes]
    for line in other if "--notes" not in argv else done.stderr.splitlines():
        print(line, file=sys.stderr)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"bandit: no report (exit {done.returncode}): {done.stdout[:500]}", file=sys.stderr)
        return done.returncode or 1
    for issue in report["results"]:
        print(
            f"{issue['filename']}:{issue['line_number']}: {issue['test_id']} "
            f"({issue['issue_severity'].lower()} severity, {issue['issue_confidence'].lower()} "
            f"confidence): {issue['issue_text']} {issue['more_info']}"
        )
    files = len([name for name in report.get("metrics", {}) if name != "_totals"])
    findings = len(report["results"])
    about_notes = f"; {len(notes)} notes about nosec comments (--notes shows them)" if notes else ""
    print(f"bandit: {findings or 'no'} findings in {files} files of {TARGET}{about_notes}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
