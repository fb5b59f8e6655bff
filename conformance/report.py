"""Render a ``SuiteReport`` for people: a per-type summary, the failures, and the verdict."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table

from conformance.suite import FAIL, PASS, SKIP, SuiteError, SuiteReport, run_suite

__all__ = ["main", "render"]

_MAX_FAILURES = 200


def render(report: SuiteReport, console: Console) -> None:
    """Print the summary table, the failures table and a one-line verdict."""
    console.print(
        f"[bold]Conformance of[/bold] {report.base_url} ({report.software.strip() or 'unknown software'})"
    )
    counts: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for result in report.results:
        area = "search" if result.check.startswith("search ") else "interaction"
        counts[result.resource_type or "(system)"][(area, result.status)] += 1
    summary = Table(title="Checks per resource type", show_lines=False)
    for column in (
        "type",
        "interactions ok",
        "interactions failed",
        "search ok",
        "search failed",
        "not probed",
    ):
        summary.add_column(column, justify="left" if column == "type" else "right")
    for rtype in sorted(counts):
        row = counts[rtype]
        failed = row[("interaction", FAIL)] + row[("search", FAIL)]
        summary.add_row(
            f"[red]{rtype}[/red]" if failed else rtype,
            str(row[("interaction", PASS)]),
            str(row[("interaction", FAIL)]),
            str(row[("search", PASS)]),
            str(row[("search", FAIL)]),
            str(row[("search", SKIP)] + row[("interaction", SKIP)]),
        )
    console.print(summary)
    failures = report.failures
    if failures:
        table = Table(title=f"Failures ({len(failures)})")
        table.add_column("type")
        table.add_column("check")
        table.add_column("why")
        for result in failures[:_MAX_FAILURES]:
            table.add_row(result.resource_type or "(system)", result.check, result.detail)
        console.print(table)
    verdict = "[green]PASS[/green]" if report.ok else "[red]FAIL[/red]"
    totals = f"{report.count(PASS)} passed, {report.count(FAIL)} failed, {report.count(SKIP)} not probed"
    console.print(f"{verdict}: {totals}")


def main(base_url: str, token: str, console: Console | None = None, types: set[str] | None = None) -> int:
    """Run the suite and print the report; 0 when every check passed, 1 on failures, 2 if it cannot run."""
    out = console or Console()
    try:
        report = run_suite(base_url, token, types=types)
    except SuiteError as exc:
        out.print(f"[red]cannot run the conformance suite:[/red] {exc}")
        return 2
    render(report, out)
    return 0 if report.ok else 1
