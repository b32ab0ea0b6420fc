import json
from collections.abc import Callable

import pytest

from common.errors import InvalidInput
from common.json_limits import MAX_DEPTH, MAX_KEY_LENGTH, MAX_NODES, check_json_shape


def nested(depth: int, container: str = "dict") -> object:
    """A record of ``depth`` containers, each inside the one before, with a scalar inside."""
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value} if container == "dict" else [value]
    return value


def rejected(value: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        check_json_shape(value, "data[3]")
    return caught.value.message


@pytest.mark.parametrize("container", ["dict", "list"])
def test_depth_up_to_the_limit_passes_and_one_more_is_rejected(container: str) -> None:
    check_json_shape(nested(MAX_DEPTH, container), "data[3]")
    assert rejected(nested(MAX_DEPTH + 1, container)) == (
        f"data[3]: nested deeper than {MAX_DEPTH} levels"
    )


def test_depth_counts_lists_and_dicts_alike() -> None:
    mixed: object = 1
    for level in range(MAX_DEPTH + 1):
        mixed = [mixed] if level % 2 else {"k": mixed}
    assert "nested deeper" in rejected(mixed)
    assert "nested deeper" in rejected([{"ok": 1}, nested(MAX_DEPTH)])  # not the first branch


def test_a_shape_far_deeper_than_the_interpreter_stack_is_rejected_not_overflowed() -> None:
    assert "nested deeper" in rejected(json.loads("[" * 900 + "]" * 900))
    assert "nested deeper" in rejected(nested(100_000))


@pytest.mark.parametrize("value", ["text", 12, 1.5, True, None])
def test_scalars_pass(value: object) -> None:
    check_json_shape(value, "data[0]")


def test_key_length_up_to_the_limit_passes_and_longer_is_rejected() -> None:
    check_json_shape({"k" * MAX_KEY_LENGTH: 1}, "data[0]")
    message = rejected({"outer": [{"k" * (MAX_KEY_LENGTH + 1): 1}]})
    assert message == f"data[3]: has a key longer than {MAX_KEY_LENGTH} characters"
    assert "kkk" not in message  # the key itself is not echoed


@pytest.mark.parametrize(
    "build",
    [
        lambda n: {"values": [0] * (n - 2)},  # the record, the list, n - 2 numbers
        lambda n: {f"k{i}": i for i in range(n - 1)},
    ],
    ids=["list", "dict"],
)
def test_node_count_up_to_the_limit_passes_and_one_more_is_rejected(
    build: Callable[[int], object],
) -> None:
    check_json_shape(build(MAX_NODES), "data[0]")
    assert rejected(build(MAX_NODES + 1)) == f"data[3]: holds more than {MAX_NODES} values"


def test_nodes_are_counted_across_the_whole_record() -> None:
    half = MAX_NODES // 2
    check_json_shape([[0] * (half - 2), [0] * (half - 1)], "data[0]")
    assert "more than" in rejected([[0] * (half - 1), [0] * (half - 1)])
