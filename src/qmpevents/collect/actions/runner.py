"""Runs the rules' steps for matching events, without ever holding up event intake.

:meth:`ActionRunner.on_event` is called by the fan-out for every event (synchronous
and cheap): it matches the rules, asks each rule's :class:`~.guards.Guard`, and puts
an admitted run in the rule's bounded queue (full: the run is dropped, counted and
logged). A few workers per rule run the steps, each bounded by its timeout; a step
that fails ends its run. Each run is recorded (:class:`~.store.ActionStore`) and
counted in ``qmpevents_actions_total{rule,outcome}``.

A run listens to its VM's events from its trigger on, so a ``wait-for`` sees every
event that arrived after the previous step started (``DUMP_COMPLETED`` after
``dump-guest-memory`` with ``detach=true`` cannot be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from qmpevents.collect.actions.guards import Guard
from qmpevents.collect.actions.rules import Rule, Step, substitute
from qmpevents.collect.actions.store import ActionRecord, ActionStore, StepRecord
from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.collect.records import EventRecord

__all__ = ["ActionRunner", "Execute"]

log = logging.getLogger(__name__)

Execute = Callable[[str, str, Mapping[str, Any], float], Awaitable[Any]]
"""``(vm, command, arguments, timeout)``: run a QMP command on that VM's connection."""

WORKERS = 4


@dataclass(eq=False)
class _Run:
    rule: Rule
    vm: str
    record: EventRecord
    seen: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ActionRunner:
    """Runs ``rules``; QMP steps go through ``execute``. See the module docstring."""

    def __init__(
        self,
        rules: Sequence[Rule],
        execute: Execute,
        *,
        metrics: CollectorMetrics | None = None,
        store: ActionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = list(rules)
        self.execute = execute
        self.metrics = metrics
        self.store = store
        self.guards = {rule.name: Guard(rule, clock) for rule in self.rules}
        self._queues = {rule.name: asyncio.Queue[_Run](rule.queue) for rule in self.rules}
        self._listening: dict[str, set[_Run]] = {}
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the workers (in the running loop)."""
        for rule in self.rules:
            for n in range(WORKERS):
                task = asyncio.create_task(self._work(rule), name=f"action {rule.name} {n}")
                self._workers.append(task)

    async def join(self) -> None:
        """Wait until every admitted run has ended."""
        await asyncio.gather(*(queue.join() for queue in self._queues.values()))

    async def aclose(self) -> None:
        """Stop the workers; runs in progress are cancelled (and recorded as such)."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self.store is not None:
            self.store.close()

    def _count(self, rule: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.actions.labels(rule, outcome).inc()

    def on_event(self, vm: str, record: EventRecord) -> None:
        """An event of ``vm`` was received: feed the runs listening, start matching rules."""
        for run in self._listening.get(vm, ()):
            run.seen.append(record.name)
            run.changed.set()
        data: Mapping[str, Any] | None = None
        for rule in self.rules:
            if not rule.matches(vm, record.name):
                continue
            if rule.where:
                if data is None:
                    data = _data(record)
                if not rule.matches_data(data):
                    continue
            self._admit(rule, vm, record)

    def _admit(self, rule: Rule, vm: str, record: EventRecord) -> None:
        guard = self.guards[rule.name]
        verdict = guard.admit(vm)
        if verdict == "suspend":
            log.warning(
                "action %s suspended for VM %s: %d runs in %g s",
                rule.name,
                vm,
                guard.runs_in_window(vm),
                rule.window,
            )
            if self.metrics is not None:
                self.metrics.actions_suspended.labels(rule.name).inc()
            verdict = "suspended"
        if verdict != "run":
            self._count(rule.name, verdict)
            return
        run = _Run(rule, vm, record)
        try:
            self._queues[rule.name].put_nowait(run)
        except asyncio.QueueFull:
            self._count(rule.name, "dropped")
            log.error(
                "action %s for VM %s: queue full (%d), run dropped", rule.name, vm, rule.queue
            )
            return
        self._listening.setdefault(vm, set()).add(run)

    async def _work(self, rule: Rule) -> None:
        queue = self._queues[rule.name]
        while True:
            run = await queue.get()
            try:
                await self._run(run)
            finally:
                self._listening.get(run.vm, set()).discard(run)
                queue.task_done()

    async def _run(self, run: _Run) -> None:
        record = run.record
        result = ActionRecord(run.rule.name, run.vm, record.name, record.qemu_ts, time.time())
        began = time.monotonic()
        mark = 0  # events seen when the previous step started
        try:
            for step in run.rule.steps:
                start = len(run.seen)
                step_began = time.monotonic()
                error: str | None = None
                try:
                    async with asyncio.timeout(step.timeout):
                        await self._step(step, run, mark)
                except TimeoutError:
                    error = f"timed out after {step.timeout:g} s"
                except Exception as failure:  # any failure ends the run
                    error = f"{type(failure).__name__}: {failure}"
                target = step.target if isinstance(step.target, str) else " ".join(step.target)
                duration = time.monotonic() - step_began
                result.steps.append(StepRecord(step.kind, target, duration, error is None, error))
                mark = start
                if error is not None:
                    result.outcome = "error"
                    log.error(
                        "action %s for VM %s: %s %s: %s", *_who(run), step.kind, target, error
                    )
                    break
        except asyncio.CancelledError:
            result.outcome = "cancelled"
            raise
        finally:
            result.duration = time.monotonic() - began
            self._count(run.rule.name, result.outcome)
            if self.store is not None:
                await asyncio.shield(self.store.record(result))

    async def _step(self, step: Step, run: _Run, mark: int) -> None:
        record = run.record
        placeholders = {
            "vm": run.vm,
            "event": record.name,
            "timestamp": f"{record.qemu_seconds}.{record.qemu_micros:06d}",
        }
        if step.kind == "execute":
            arguments = substitute(dict(step.arguments), placeholders)
            await self.execute(run.vm, str(step.target), arguments, step.timeout)
        elif step.kind == "wait-for":
            await _wait_for(run, str(step.target), mark)
        elif step.kind == "exec":
            argv = [substitute(arg, placeholders) for arg in step.target]
            await _exec(argv, run)
        else:
            await _post(str(step.target), record.raw)


def _who(run: _Run) -> tuple[str, str]:
    return run.rule.name, run.vm


def _data(record: EventRecord) -> Mapping[str, Any]:
    try:
        data = json.loads(record.raw).get("data", {})
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


async def _wait_for(run: _Run, pattern: str, mark: int) -> None:
    while True:
        if any(fnmatch.fnmatchcase(name, pattern) for name in run.seen[mark:]):
            return
        mark = len(run.seen)
        run.changed.clear()
        await run.changed.wait()


async def _exec(argv: list[str], run: _Run) -> None:
    record = run.record
    env = dict(os.environ)
    env.update(
        QMP_VM=run.vm,
        QMP_EVENT=record.name,
        QMP_TIMESTAMP=f"{record.qemu_seconds}.{record.qemu_micros:06d}",
        QMP_EVENT_JSON=record.raw.decode("utf-8", "replace"),
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stderr is not None
    stdin, stderr = process.stdin, process.stderr

    async def feed() -> None:
        # A program that does not read its stdin must not fail the step by itself.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(record.raw)
            await stdin.drain()
            stdin.close()

    try:
        _, tail = await asyncio.gather(feed(), _stderr_tail(stderr))
        await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        text = tail.decode("utf-8", "replace").strip()[-200:]
        raise RuntimeError(f"exited with {process.returncode}" + (f": {text}" if text else ""))


async def _stderr_tail(stream: asyncio.StreamReader, keep: int = 4096) -> bytes:
    """Read ``stream`` to its end, keeping only its last ``keep`` bytes (bounded memory)."""
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail


async def _post(url: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        if response.status >= 300:
            raise RuntimeError(f"HTTP {response.status}")
