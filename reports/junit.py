"""JUnit XML for the check: one testsuite per suite, one testcase per method x suite x metric.

Follows the structure CI systems read (the Jenkins/Ant JUnit schema): a `<testsuites>` root
with `tests`/`failures`/`errors` counts, `<testsuite name tests failures errors skipped>`
children, `<testcase classname name time>` entries, and a `<failure message type>` element in
each regressed or missing case. Held, improved and new cases pass and carry their numbers in
`<system-out>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol


class CheckResult(Protocol):
    task: str
    method: str
    metric: str
    status: str
    detail: str
    tolerance: str

    @property
    def failed(self) -> bool: ...


def junit_xml(results: Sequence[CheckResult], run_label: str) -> str:
    by_task: dict[str, list[CheckResult]] = defaultdict(list)
    for result in results:
        by_task[result.task].append(result)
    root = ET.Element("testsuites", name=f"steerbench check: {run_label}")
    total = failures = 0
    for task, cases in by_task.items():
        failed = sum(r.failed for r in cases)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"steerbench.{task}",
            tests=str(len(cases)),
            failures=str(failed),
            errors="0",
            skipped="0",
            time="0",
        )
        for r in cases:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"steerbench.{task}.{r.method}",
                name=r.metric,
                time="0",
            )
            text = f"{r.status}: {r.detail} (tolerance {r.tolerance})"
            if r.failed:
                failure = ET.SubElement(case, "failure", message=text, type=r.status)
                failure.text = text
            else:
                ET.SubElement(case, "system-out").text = text
        total += len(cases)
        failures += failed
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
