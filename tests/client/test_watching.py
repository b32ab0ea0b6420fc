"""Waiting for a task: the event-stream parser, every decision of a :class:`Watch`, and both
clients' waits against a scripted gateway whose event stream works, is refused, breaks, ends
early, falls silent or is not a stream at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from gateway.models import StatusResponse
from tests.client.conftest import TASK_ID, Scripted, answer, event_line, status_body
from wealthai_client import (
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from wealthai_client.sse import EventParser, task_event
from wealthai_client.watching import Watch

STATUS = f"/task/{TASK_ID}/status"
EVENTS = f"/task/{TASK_ID}/events"


# -- the event stream's format -----------------------------------------------------------------


def test_events_end_at_a_blank_line_and_join_their_data_lines() -> None:
    parser = EventParser()
    fed = [
        parser.feed(line)
        for line in [
            ": a comment\n",
            "event: change\r\n",
            "id: 3\n",
            'data: {"a":\n',
            "data:1}\n",
            "\n",
            "\n",
        ]
    ]
    assert fed == [None, None, None, None, None, '{"a":\n1}', None]


def test_an_event_that_is_not_a_task_event_is_a_server_error() -> None:
    assert task_event(event_line().decode()[len("data: ") :].strip()).progress == 50
    with pytest.raises(ServerError, match="not a task event"):
        task_event('{"status": "nonsense"}')


# -- a watch's decisions -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(state: str = "processing", progress: int = 50) -> StatusResponse:
    return StatusResponse.model_validate(status_body(state, progress))


def test_a_status_is_an_update_only_when_it_changed() -> None:
    watch = Watch(TASK_ID)
    first = watch.seen(status(), "start")
    assert first is not None and (first.source, first.done) == ("start", False)
    assert watch.seen(status(), "events") is None
    done = watch.seen(status("completed", 100), "events")
    assert done is not None and done.done and watch.done


@pytest.mark.parametrize(
    "error", [Unreachable("down"), ServerError("boom", status=503), RateLimited("many")]
)
def test_a_stream_that_fails_for_now_turns_to_polling(error: Exception) -> None:
    watch = Watch(TASK_ID)
    watch.stream_failed(error)  # type: ignore[arg-type]
    assert watch.mode == "polling"


@pytest.mark.parametrize("error", [NotFound("gone"), Unauthorized("who"), Forbidden("no")])
def test_a_stream_refusal_polling_would_meet_too_is_raised(error: Exception) -> None:
    with pytest.raises(type(error)):
        Watch(TASK_ID).stream_failed(error)  # type: ignore[arg-type]


def test_a_stream_that_ended_is_reopened_only_if_it_had_delivered() -> None:
    watch = Watch(TASK_ID)
    watch.stream_ended(delivered=True)
    assert watch.mode == "events"
    watch.stream_ended(delivered=False)
    assert watch.mode == "polling"


def test_polling_tolerates_a_few_transient_failures_then_gives_up() -> None:
    watch = Watch(TASK_ID, poll_interval=0.5, max_failures=2)
    watch.poll_failed(RateLimited("slow down", retry_after_s=3))
    assert watch.delay == 3  # the gateway's Retry-After
    watch.poll_failed(Unreachable("down"))
    assert watch.delay == 0.5
    with pytest.raises(Unreachable):
        watch.poll_failed(Unreachable("still down"))
    watch.seen(status(), "polling")  # a success starts the count again
    assert watch.failures == 0
    with pytest.raises(NotFound):
        watch.poll_failed(NotFound("gone"))


def test_the_deadline_bounds_reads_and_sleeps_then_raises_with_the_last_status() -> None:
    clock = Clock()
    unbounded = Watch(TASK_ID, idle_s=30, poll_interval=2, clock=clock)
    assert (unbounded.remaining(), unbounded.read_timeout(), unbounded.next_poll()) == (None, 30, 2)
    watch = Watch(TASK_ID, timeout=10, idle_s=30, poll_interval=2, clock=clock)
    watch.seen(status(), "start")
    clock.now += 9
    assert watch.read_timeout() == pytest.approx(1)
    assert watch.next_poll() == pytest.approx(1)
    clock.now += 1
    with pytest.raises(WaitTimeout, match="still processing \\(50%\\)") as caught:
        watch.next_poll()
    assert caught.value.last == status()


# -- the clients' waits against a scripted gateway ---------------------------------------------


def statuses(*steps: tuple[str, int]) -> list[Any]:
    return [answer(200, status_body(state, progress)) for state, progress in steps]


def stream(*chunks: bytes, pause: float = 0.0, then_drop: bool = False) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(pause)
        if then_drop:
            assert request.transport is not None
            request.transport.close()
        return response

    return handler


def test_a_wait_follows_the_event_stream(scripted: Scripted, call: Any) -> None:
    scripted.on("GET", STATUS, *statuses(("pending", 0), ("processing", 50), ("completed", 100)))
    scripted.on("GET", EVENTS, stream(event_line("processing", 50), event_line("completed", 100)))
    updates = call("watch", TASK_ID)
    assert [(u.source, u.status.status) for u in updates] == [
        ("start", "pending"),
        ("events", "processing"),
        ("events", "completed"),
    ]
    assert len(scripted.requests("GET", EVENTS)) == 1
    assert scripted.requests("GET", EVENTS)[0].headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize(
    "refusal",
    [
        answer(429, {"error": "rate_limited", "detail": "20 streams open"}, {"Retry-After": "5"}),
        answer(503, {"error": "unavailable", "detail": "down"}),
        answer(200, raw=b"<html>a proxy's page</html>", headers={"Content-Type": "text/html"}),
        stream(event_line("processing", 50), then_drop=True),  # broken mid-way
        stream(),  # ended before the gateway's first event
    ],
    ids=["429", "503", "not-a-stream", "dropped", "empty"],
)
def test_a_wait_falls_back_to_polling_when_the_stream_cannot_serve(
    scripted: Scripted, call: Any, refusal: Any
) -> None:
    scripted.on(
        "GET", STATUS, *statuses(("processing", 10), ("processing", 50), ("completed", 100))
    )
    scripted.on("GET", EVENTS, refusal)
    updates = call("watch", TASK_ID)
    assert updates[-1].status.status == "completed"
    assert updates[-1].source == "polling"
    assert len(scripted.requests("GET", EVENTS)) == 1  # not asked again once polling


def test_a_stream_that_ends_early_after_events_is_opened_again(
    scripted: Scripted, call: Any
) -> None:
    scripted.on(
        "GET", STATUS, *statuses(("processing", 10), ("processing", 50), ("completed", 100))
    )
    scripted.on(
        "GET",
        EVENTS,
        stream(event_line("processing", 50)),  # its lifetime ran out
        stream(event_line("completed", 100)),
    )
    updates = call("watch", TASK_ID)
    assert [(u.source, u.status.progress) for u in updates] == [
        ("start", 10),
        ("events", 50),
        ("events", 100),
    ]
    assert len(scripted.requests("GET", EVENTS)) == 2


def test_a_silent_stream_is_opened_again_after_idle_s(scripted: Scripted, call: Any) -> None:
    scripted.on(
        "GET", STATUS, *statuses(("processing", 10), ("processing", 50), ("completed", 100))
    )
    scripted.on(
        "GET",
        EVENTS,
        stream(event_line("processing", 50), b": nothing more\n", pause=10),
        stream(event_line("completed", 100)),
    )
    updates = call("watch", TASK_ID, idle_s=1.0)
    assert updates[-1].status.status == "completed"
    assert len(scripted.requests("GET", EVENTS)) == 2


def test_a_stream_refused_for_good_is_raised(scripted: Scripted, call: Any) -> None:
    scripted.on("GET", STATUS, answer(200, status_body()))
    scripted.on("GET", EVENTS, answer(404, {"error": "not_found", "detail": "task gone"}))
    with pytest.raises(NotFound, match="task gone"):
        call("watch", TASK_ID)


def test_polling_rides_out_a_failure_but_not_too_many(scripted: Scripted, call: Any) -> None:
    down = answer(503, {"error": "unavailable", "detail": "orchestrator restarting"})
    scripted.on("GET", EVENTS, answer(503, {"error": "unavailable", "detail": "down"}))
    scripted.on(
        "GET", STATUS, answer(200, status_body()), down, answer(200, status_body("error", 100))
    )
    assert call("wait", TASK_ID).status == "error"
    scripted.on("GET", STATUS, answer(200, status_body()), down)
    with pytest.raises(ServerError, match="orchestrator restarting"):
        call("wait", TASK_ID)
    assert len(scripted.requests("GET", STATUS)) > 5


def test_a_wait_gives_up_at_its_deadline(scripted: Scripted, call: Any) -> None:
    scripted.on("GET", STATUS, answer(200, status_body("processing", 60)))
    scripted.on("GET", EVENTS, stream(event_line("processing", 60), b": idle\n", pause=5))
    with pytest.raises(WaitTimeout) as caught:
        call("wait", TASK_ID, timeout=0.5)
    assert caught.value.last.progress == 60


def test_events_yields_the_gateways_events(scripted: Scripted, call: Any) -> None:
    scripted.on("GET", EVENTS, stream(event_line("processing", 50), event_line("completed", 100)))
    events = call("events", TASK_ID)
    assert [(e.status, e.progress) for e in events] == [("processing", 50), ("completed", 100)]
