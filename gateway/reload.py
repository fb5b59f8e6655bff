"""Reloading the sources, their mapping sets and the pull schedules without a restart.

``POST /admin/reload`` and SIGHUP (to ``gateway serve``, each of its ``--workers``, and
``gateway worker``) call ``Reloader.reload``: it reads the configuration file again, validates
all of it, compiles the mappings folder for the new ``sources:`` and, only if nothing at all
is wrong, puts the new sources and sets in use in one step and brings the pull schedules in
line. Otherwise nothing changes and the answer lists every problem as ``file:line: where:
reason``; the previous configuration keeps serving.

What a reload applies is ``RELOADABLE``: the sources (pushed and pulled, with their ``pull:``
sections and schedules) and ``mappings_dir``, whose mapping sets and ConceptMaps are compiled
again whether or not the file changed. Every other setting (store, queue, host and port,
destinations, auth, limits, ...) is read at start only: a reload that finds one of them
changed in the file still applies the reloadable part and names the others in
``restart_required``, comparing the file with what it held when this process started.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import ValidationError

from gateway.ingest import PULL_KINDS, MappingConfig, SourceConfig, SourceLocator
from gateway.mapping import YamlSyntaxError, read_yaml
from gateway.pull import pull_tasks
from gateway.settings import ConfigFileError, Settings, load_settings, located_errors, read_config_file

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = ["RELOADABLE", "ReloadResult", "Reloader", "hold_sighup", "reload_on_sighup", "source_locator"]

log = logging.getLogger("gateway.reload")

#: The settings a reload applies; every other one takes a restart.
RELOADABLE = frozenset({"sources", "mappings_dir"})
#: Name prefix of the scheduled pull tasks (``gateway.pull.pull_tasks``).
PULL_TASK_PREFIX = "pull-"


@dataclass(slots=True)
class ReloadResult:
    """What one reload did, or why it did nothing (``problems``); no patient data, no secrets."""

    applied: bool
    problems: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The answer to a reload that was applied."""
        return {
            "reloaded": True,
            "config_file": self.config_file,
            "sources": self.sources,
            "sets": self.sets,
            "pull_schedule_changes": self.schedule,
            "restart_required": self.restart_required,
            "notes": self.notes,
        }

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome of a refused reload: every problem, then what would need a restart anyway."""
        issues = [{"severity": "error", "code": "invalid", "diagnostics": problem} for problem in self.problems[:200]]
        issues += [
            {"severity": "warning", "code": "not-supported", "diagnostics": _restart_note(name)}
            for name in self.restart_required
        ]
        return {"resourceType": "OperationOutcome", "issue": issues}

    def summary(self) -> str:
        """One log line (the problems follow it, one a line)."""
        if not self.applied:
            return f"refused, the running configuration stays: {len(self.problems)} problem(s)"
        text = f"applied: {len(self.sources)} source(s), {len(self.sets)} mapping set(s)"
        if self.schedule:
            text += f"; pull schedule: {', '.join(self.schedule)}"
        if self.restart_required:
            text += f"; changed but needing a restart: {', '.join(self.restart_required)}"
        return text


def _restart_note(name: str) -> str:
    return f"{name} changed in the configuration file; a reload does not apply it: restart the gateway"


@dataclass(slots=True)
class _Staged:
    result: ReloadResult
    config: MappingConfig | None = None


class Reloader:
    """Reloads one process's sources, mapping sets and pull schedules (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._path = services.settings.config_file
        self._started_with = _file_values_or_none(self._path)
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        """Read the configuration again and apply its reloadable part, all or nothing; never raises
        for a bad configuration (its problems are in the result)."""
        async with self._lock:
            staged = await anyio.to_thread.run_sync(self._stage)
            if staged.config is None:
                return staged.result
            ingest = self.services.require_ingest()
            ingest.registry.install(staged.config)
            staged.result.applied = True
            await self._reschedule(staged.result, staged.config)
            return staged.result

    async def reload_and_log(self, trigger: str) -> ReloadResult:
        """``reload``, logged with its outcome (what a signal handler runs: it must never raise)."""
        try:
            result = await self.reload()
        except Exception as exc:  # noqa: BLE001 - a reload must never take the process down
            log.error("reload (%s) failed: %s; the running configuration stays", trigger, type(exc).__name__)
            return ReloadResult(applied=False, problems=[f"reload failed: {type(exc).__name__}"])
        if result.applied:
            log.info("reload (%s) %s", trigger, result.summary())
        else:
            log.error("reload (%s) %s\n%s", trigger, result.summary(), "\n".join(result.problems[:50]))
        return result

    # -- staging (on a worker thread: reading files and compiling mappings take a while)

    def _stage(self) -> _Staged:
        result = ReloadResult(applied=False, config_file=str(self._path) if self._path is not None else None)
        ingest = self.services.ingest
        if ingest is None:
            # A `gateway worker` started without pulled sources ingests nothing. A file that still
            # pulls nothing leaves it nothing to reload (a reload of every unit, e.g. systemd's
            # ExecReload, is no error); a newly pulled source needs a restart to be scheduled.
            settings = self._read_settings(result) if self._path is not None else None
            if settings is not None and not any(source.pull is not None for source in settings.sources):
                result.applied = True
                result.notes.append("this process ingests nothing (no pulled sources): nothing to reload")
                return _Staged(result)
            if settings is not None or self._path is None:
                result.problems.append("this process runs no ingest (a `gateway worker` started without pulled"
                                       " sources): restart it to pick up sources")  # fmt: skip
            return _Staged(result)
        registry = ingest.registry
        if self._path is None:
            result.notes.append("no configuration file: the sources come from GATEWAY_* variables, which a"
                                " running process cannot re-read; the mapping sets were compiled again")  # fmt: skip
            config, issues = registry.stage(registry.root, list(registry.sources.values()))
        else:
            settings = self._read_settings(result)
            if settings is None:
                # The mapping files' own problems too, and those of the sources that are fine in
                # themselves (a set that does not exist), so one round of fixes can cover them all.
                sound = _sound_sources(self._path)
                _, issues = registry.stage(registry.root, [source for _, source in sound],
                                           source_locator(self._path), [index for index, _ in sound])
                result.problems += [str(issue) for issue in issues]
                return _Staged(result)
            config, issues = registry.stage(settings.mappings_dir, settings.sources, source_locator(self._path))
        result.problems += [str(issue) for issue in issues]
        if config is None:
            return _Staged(result)
        result.sources = sorted(config.sources)
        result.sets = sorted(config.sets)
        return _Staged(result, config)

    def _read_settings(self, result: ReloadResult) -> Settings | None:
        assert self._path is not None
        try:
            values = read_config_file(self._path)
        except ConfigFileError as exc:
            result.problems.append(str(exc))
            return None
        if self._started_with is not None:
            changed = set(values) | set(self._started_with)
            result.restart_required = sorted(
                name for name in changed - RELOADABLE if values.get(name) != self._started_with.get(name)
            )
        try:
            return load_settings(self._path, file_values=values)
        except ConfigFileError as exc:
            result.problems.append(str(exc))
        except ValidationError as exc:
            result.problems += located_errors(exc, self._path, values)
        return None

    # -- applying

    async def _reschedule(self, result: ReloadResult, config: MappingConfig) -> None:
        pulled = [source for source in config.sources.values() if source.kind in PULL_KINDS]
        scheduler, pulls = self.services.scheduler, self.services.pulls
        if scheduler is not None and pulls is not None:
            result.schedule = await scheduler.replace(PULL_TASK_PREFIX, pull_tasks(pulls))
        elif pulled:
            result.notes.append(_unscheduled(pulled))


def source_locator(path: Path) -> SourceLocator:
    """Where each source's ``mapping:`` is written in the configuration file ``path`` (its line), for
    problems about a source's mapping set; ``GATEWAY_SOURCES`` when the file has no ``sources:``."""
    try:
        doc = read_yaml(path)
    except YamlSyntaxError:  # stricter than the settings reader (duplicate keys): no lines then
        doc = None

    def locate(index: int) -> tuple[str, int]:
        if doc is None:
            return str(path), 0
        if not isinstance(doc.data, dict) or "sources" not in doc.data:
            return "GATEWAY_SOURCES", 0
        return str(path), doc.line_of(doc.data_path(("sources", index, "mapping")))

    return locate


def _sound_sources(path: Path) -> list[tuple[int, SourceConfig]]:
    """The sources of the file at ``path`` valid on their own (the settings as a whole are not),
    each with its place in the file's list."""
    try:
        raw = read_config_file(path).get("sources")
    except ConfigFileError:
        raw = None
    found: list[tuple[int, SourceConfig]] = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            found.append((index, SourceConfig.model_validate(item)))
        except ValidationError:
            continue  # already named by the settings' own errors
    return found


#: SIGHUPs that came before ``reload_on_sighup`` took the signal over (a list: a signal handler
#: may not take a lock, and appending takes none).
_held_sighups: list[int] = []


def hold_sighup() -> None:
    """Until ``reload_on_sighup`` takes SIGHUP over, remember one instead of dying of it (its default
    action): a process still starting when a SIGHUP comes (a ``--workers`` supervisor passes each
    on to every worker) reloads once it can, instead of serving what it read before the change."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: _held_sighups.append(signum))
        # A worker starts with SIGHUP blocked (``gateway.cli.server``): one already sent arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def reload_on_sighup(reloader: Reloader) -> Callable[[], None]:
    """Reload on every SIGHUP to this process, in the running event loop, until the returned function
    is called. Where this thread cannot take signals (not the main thread), nothing is installed."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[ReloadResult]] = set()  # a reference, so a reload is not collected mid-way

    def handle() -> None:
        task = loop.create_task(reloader.reload_and_log("SIGHUP"))
        running.add(task)
        task.add_done_callback(running.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, handle)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # no SIGHUP, or not the main thread
        return lambda: None
    if _held_sighups:  # one came while this process was starting: its reload is due now
        _held_sighups.clear()
        handle()

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def _unscheduled(pulled: list[SourceConfig]) -> str:
    names = ", ".join(source.name for source in pulled)
    return (f"pulled sources ({names}) are scheduled by the process that runs the scheduler (`gateway worker`,"
            " or `gateway serve` with delivery.in_process_worker): send it SIGHUP too")  # fmt: skip


def _file_values_or_none(path: Path | None) -> dict[str, Any] | None:
    """The configuration file as this process started with it (None: no file, or unreadable now)."""
    if path is None:
        return None
    try:
        return read_config_file(path)
    except ConfigFileError:
        return None
