"""The command registry: QEMU's dispatch checks, handler outcomes, query-commands."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from qmpevents.errors import ConfigError
from qmpevents.protocol.requests import Request
from qmpevents.server.commands import (
    CommandContext,
    CommandRegistry,
    CommandSpec,
    QMPCommandFailure,
)
from qmpevents.server.server import QMPServer


class EchoArgs(msgspec.Struct, kw_only=True):
    text: str
    times: int | None = None


async def _echo(args: EchoArgs, ctx: CommandContext) -> dict[str, Any]:
    return {"text": args.text * (args.times or 1)}


def _sync(args: object, ctx: CommandContext) -> int:
    return 42


def _broken(args: object, ctx: CommandContext) -> None:
    raise RuntimeError("boom")


def _refuse(args: object, ctx: CommandContext) -> None:
    raise QMPCommandFailure("DeviceNotFound", "Device 'x' not found")


@pytest.fixture
def registry() -> CommandRegistry:
    registry = CommandRegistry()
    registry.add(CommandSpec("echo", _echo, EchoArgs))
    registry.add(CommandSpec("sync", _sync, allow_oob=True))
    registry.add(CommandSpec("broken", _broken))
    registry.add(CommandSpec("refuse", _refuse))
    registry.add(CommandSpec("session-only", None))
    return registry


@pytest.fixture
def ctx() -> CommandContext:
    return CommandContext(QMPServer(), "test")


async def failure(registry: CommandRegistry, ctx: CommandContext, request: Request) -> Any:
    with pytest.raises(QMPCommandFailure) as info:
        await registry.dispatch(request, ctx)
    return (info.value.error_class, info.value.desc)


async def test_handlers_sync_and_async(registry: CommandRegistry, ctx: CommandContext) -> None:
    assert await registry.dispatch(Request("echo", {"text": "ab", "times": 2}), ctx) == {
        "text": "abab"
    }
    assert await registry.dispatch(Request("sync"), ctx) == 42
    assert await registry.dispatch(Request("sync", oob=True), ctx) == 42


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Request("nope"), ("CommandNotFound", "The command nope has not been found")),
        (Request(""), ("CommandNotFound", "The command  has not been found")),
        (
            Request("session-only"),
            ("CommandNotFound", "The command session-only has not been found"),
        ),
        (Request("echo", oob=True), ("GenericError", "The command echo does not support OOB")),
        (Request("echo"), ("GenericError", "Parameter 'text' is missing")),
        (
            Request("echo", {"text": 1}),
            ("GenericError", "Invalid parameter type for 'text', expected: string"),
        ),
        (Request("echo", {"text": "a", "x": 1}), ("GenericError", "Parameter 'x' is unexpected")),
        (Request("sync", {"x": 1}), ("GenericError", "Parameter 'x' is unexpected")),
        (Request("refuse"), ("DeviceNotFound", "Device 'x' not found")),
    ],
)
async def test_errors_worded_as_qemu(
    registry: CommandRegistry, ctx: CommandContext, request_: Request, expected: Any
) -> None:
    assert await failure(registry, ctx, request_) == expected


async def test_unexpected_exception_is_a_generic_error_and_logged(
    registry: CommandRegistry, ctx: CommandContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="qmpevents.server"):
        error_class, desc = await failure(registry, ctx, Request("broken"))
    assert error_class == "GenericError"
    assert "broken" in desc and "RuntimeError" in desc
    assert "boom" in caplog.text and "Traceback" in caplog.text


def test_query_commands_lists_newest_first(registry: CommandRegistry) -> None:
    assert registry.query_commands() == [
        {"name": name} for name in ("session-only", "refuse", "broken", "sync", "echo")
    ]


def test_registration_errors(registry: CommandRegistry) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        registry.add(CommandSpec("echo", _echo, EchoArgs))
    with pytest.raises(ConfigError, match=r"msgspec\.Struct"):
        registry.add(CommandSpec("bad", _sync, dict))  # type: ignore[arg-type]


def test_after_reply_callbacks_run_once_in_order(ctx: CommandContext) -> None:
    calls: list[int] = []
    ctx.after_reply(lambda: calls.append(1))
    ctx.after_reply(lambda: calls.append(2))
    ctx.run_after_reply()
    ctx.run_after_reply()
    assert calls == [1, 2]


def test_replace_keeps_the_commands_place() -> None:
    registry = CommandRegistry()
    for name in ("a", "b", "c"):
        registry.add(CommandSpec(name, lambda _, ctx: {"from": "built-in"}))
    registry.replace(CommandSpec("b", lambda _, ctx: {"from": "machine"}))
    assert [spec.name for spec in registry] == ["a", "b", "c"]
    replaced = next(spec for spec in registry if spec.name == "b")
    assert replaced.handler is not None
    assert replaced.handler(None, None) == {"from": "machine"}
    with pytest.raises(ConfigError, match="'d' is not registered"):
        registry.replace(CommandSpec("d", None))
