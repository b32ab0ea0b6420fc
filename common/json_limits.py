"""The shape limits of a submitted JSON record: how deep, how many values, how long a key.

The gateway checks them before it calls the orchestrator and the orchestrator checks them again
before it stores a task, so a record that passes can be written into a task document and read
back by every reader. The readers are the binding constraint: pydantic's JSON parser stops at
200 levels of nesting, its serializer at about 255, and Python's ``json`` at about 1000 — a task
document nests its records two levels below the top, so a record 220 levels deep can be stored
but never parsed again. Portfolio records are a few levels deep; :data:`MAX_DEPTH` leaves a wide
margin below every parser's limit.
"""

from __future__ import annotations

from collections.abc import Collection

from common.errors import InvalidInput

# Containers nested inside each other, the record itself being level 1.
MAX_DEPTH = 32
# Characters in one object key; keys are field names such as "Market Value".
MAX_KEY_LENGTH = 256
# Values (objects, arrays and scalars, the record included) in one record. A record may be up to
# 256 KiB; realistic values take 13 bytes or more, so only degenerate shapes such as
# [0,0,0,...] reach this limit before the size limit.
MAX_NODES = 20_000


def check_json_shape(value: object, where: str) -> None:
    """Raises :class:`~common.errors.InvalidInput` naming ``where`` (e.g. ``"data[0]"``) if the
    parsed JSON ``value`` is nested deeper than :data:`MAX_DEPTH`, has a key longer than
    :data:`MAX_KEY_LENGTH` or holds more than :data:`MAX_NODES` values.

    It walks the value with its own stack, not by recursion, so no shape can overflow it, and it
    stops at the first limit broken, so its work is bounded by :data:`MAX_NODES`.
    """
    pending: list[tuple[object, int]] = [(value, 1)]
    counted = 1
    while pending:
        node, depth = pending.pop()
        children: Collection[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{where}: nested deeper than {MAX_DEPTH} levels")
        counted += len(children)
        if counted > MAX_NODES:
            raise InvalidInput(f"{where}: holds more than {MAX_NODES} values")
        if isinstance(node, dict) and any(len(str(key)) > MAX_KEY_LENGTH for key in node):
            raise InvalidInput(f"{where}: has a key longer than {MAX_KEY_LENGTH} characters")
        pending.extend((child, depth + 1) for child in children)
