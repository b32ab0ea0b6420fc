"""The kinds registry: lookup, options, and the configuration check."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from common.platform_config import KINDS, PlatformConfig
from section_worker import kinds


def test_an_empty_kind_is_the_conversation():
    assert kinds.kind("").name == "conversation"
    assert kinds.kind("conversation").needs_platform


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(InvalidInput, match="'poetry' is not one this worker runs"):
        kinds.kind("poetry")


def test_the_registry_agrees_with_the_shared_table():
    for name, kind in kinds.REGISTRY.items():
        assert KINDS[name][0] == kind.needs_platform


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[1]", "must be a JSON object"), ("{", "is not JSON"), ('{"x": 1}', "options of kind")],
)
def test_bad_options_are_refused(text, problem):
    with pytest.raises(InvalidInput, match=problem):
        kinds.kind("conversation").parse_options(text)


def test_no_options_are_the_defaults():
    assert kinds.kind("conversation").parse_options("") == kinds.kind("").parse_options("{}")


def test_the_configuration_check_names_the_section():
    config = PlatformConfig.model_validate(
        {"sections": {"chat": {"asset_id": "a", "fields": ["q"], "options": {"bogus": 1}}}}
    )
    with pytest.raises(ValueError, match=r"sections\.chat\.options: options of kind conversation"):
        kinds.check_config(config)
