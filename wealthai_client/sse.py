"""Server-sent events, parsed from lines: what ``GET /task/{id}/events`` streams.

The gateway sends one ``data: <TaskEvent as JSON>`` line and a blank line per change. The
parser follows the event-stream format as far as the client needs it: ``data`` lines of one
event are joined with newlines, a blank line ends the event, comments (``:``) and the other
fields (``event``, ``id``, ``retry``) are skipped.
"""

from __future__ import annotations

from pydantic import ValidationError

from gateway.models import TaskEventOut
from wealthai_client.errors import ServerError


class EventParser:
    """Fed the stream's lines one by one; hands out each event's data when the event ends."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """The data of the event this line ends, if it ends one."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None


def task_event(data: str) -> TaskEventOut:
    """One event's data as the gateway's model (ServerError when it is not one)."""
    try:
        return TaskEventOut.model_validate_json(data)
    except ValidationError as exc:
        raise ServerError(
            f"the event stream sent something that is not a task event: {exc}"
        ) from None
