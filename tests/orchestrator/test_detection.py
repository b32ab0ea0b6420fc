import json
from pathlib import Path

import pytest

from common.errors import InvalidInput
from orchestrator.config import ConfigError, SectionsConfig, load_config
from orchestrator.detection import detect

ROOT = Path(__file__).resolve().parents[2]
SEED = [
    {"Market Value": "12000000", "Investment Value": "11000000", "Top Asset": "Equity (65%)"},
    {"top_movers_data": "AAPL +3.2%, MSFT -1.1%, NVDA +5.4%"},
    {
        "total_portfolio_mv": 1000000,
        "customer_risk_profile": "moderate",
        "assets": [{"name": "Equity", "weight": 0.6}],
    },
]


@pytest.fixture
def config():
    return load_config(ROOT / "config.json")


def test_seed_records_feed_the_three_seed_sections(config):
    found = detect(SEED, config)
    assert [d.section for d in found] == [
        "portfolio_snapshot",
        "top_movers",
        "model_and_rebalancing",
    ]
    assert found[1].asset_id == "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"
    assert [d.index for d in found] == [0, 1, 2]


def test_partial_fields_still_match(config):
    assert detect([{"Top Asset": "Bonds"}], config)[0].section == "portfolio_snapshot"


def test_most_specific_match_wins(config):
    record = {"assets": [], "customer_risk_profile": "low", "Top Asset": "x"}
    assert detect([record], config)[0].section == "model_and_rebalancing"


def test_record_matching_nothing_names_the_record_and_every_expectation(config):
    with pytest.raises(InvalidInput) as info:
        detect([SEED[0], {"foo": 1}], config)
    message = info.value.message
    assert "data[1]" in message and "foo" in message
    for name in ("portfolio_snapshot", "top_movers", "model_and_rebalancing"):
        assert name in message
    assert "top_movers_data" in message


def test_equal_match_goes_to_the_section_the_record_covers_most(config):
    # top_movers has one field, all of it matched; model_and_rebalancing one of three.
    assert detect([{"top_movers_data": "x", "assets": []}], config)[0].section == "top_movers"


def test_equal_match_and_equal_cover_is_ambiguous():
    two = SectionsConfig.model_validate(
        {
            "sections": {
                "one": {"asset_id": "a", "fields": ["x", "y"]},
                "two": {"asset_id": "a", "fields": ["x", "z"]},
            }
        }
    )
    with pytest.raises(InvalidInput, match="equally"):
        detect([{"x": 1}], two)


def test_a_table_alone_is_profiled_and_with_an_instruction_transformed(config):
    table = {"table_file": {"file_id": "f"}}
    assert detect([table], config)[0].section == "data_profile"
    assert detect([{**table, "instruction": "x"}], config)[0].section == "table_transform"


def test_two_records_for_one_section_are_rejected(config):
    with pytest.raises(InvalidInput, match="both feed section 'top_movers'"):
        detect([SEED[1], {"top_movers_data": "again"}], config)


def test_repository_config_is_valid_and_has_the_seed_sections(config):
    assert {"portfolio_snapshot", "top_movers", "model_and_rebalancing"} <= set(config.sections)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"sections": {}}), "sections"),
        (json.dumps({"sections": {"Bad Name": {"asset_id": "a", "fields": ["x"]}}}), "lower_snake"),
        (json.dumps({"sections": {"a": {"asset_id": "a", "fields": []}}}), "sections.a.fields"),
        (json.dumps({"sections": {"a": {"asset_id": "a", "fields": ["x"], "bogus": 1}}}), "bogus"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, content, problem):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_missing_config_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.json")
