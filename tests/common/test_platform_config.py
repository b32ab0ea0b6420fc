"""The shared configuration: chains, assets and tenants with their defaults, and every rule a
bad file breaks named in the error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.platform_config import (
    AssetConfig,
    ConfigError,
    LatencyPrior,
    PlatformConfig,
    SectionConfig,
    TenantConfig,
    load_config,
    needs_platform,
    progress_text,
)

ROOT = Path(__file__).resolve().parents[2]


def config(**parts: Any) -> PlatformConfig:
    body: dict[str, Any] = {"sections": {"s": {"asset_id": "a", "fields": ["x"]}}}
    body.update(parts)
    return PlatformConfig.model_validate(body)


def load(tmp_path: Path, body: dict[str, Any]) -> PlatformConfig:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(body))
    return load_config(path)


def test_the_repository_file_is_valid_and_every_section_has_a_fallback() -> None:
    loaded = load_config(ROOT / "config.json")
    for name in ("portfolio_snapshot", "top_movers", "model_and_rebalancing"):
        chain = loaded.sections[name].chain
        assert len(chain) >= 2, name
        assert chain[0] == loaded.sections[name].asset_id
    # Every asset of a chain has its own limits, not the defaults.
    assert loaded.known_assets() <= set(loaded.assets)
    assert loaded.tenant("anyone").budget_day is not None


def test_asset_id_alone_is_a_chain_of_one() -> None:
    section = config().sections["s"]
    assert section.chain == ("a",)


def test_assets_alone_make_the_first_the_asset_id() -> None:
    section = config(sections={"s": {"assets": ["b", "c"], "fields": ["x"]}}).sections["s"]
    assert (section.asset_id, section.chain) == ("b", ("b", "c"))


def test_both_given_with_asset_id_first_is_valid() -> None:
    body = {"s": {"asset_id": "b", "assets": ["b", "c"], "fields": ["x"]}}
    assert config(sections=body).sections["s"].chain == ("b", "c")


def test_unlisted_assets_and_tenants_get_the_star_entry_then_the_defaults() -> None:
    bare = config()
    assert bare.asset("zzz") == AssetConfig()
    assert bare.tenant("acme") == TenantConfig()
    starred = config(assets={"*": {"rpm": 7}}, tenants={"*": {"budget_day": 3}})
    assert starred.asset("zzz").rpm == 7
    assert starred.tenant("acme").budget_day == 3
    own = config(assets={"a": {"rpm": 9}, "*": {"rpm": 7}}, tenants={"acme": {"rpm": 5}})
    assert own.asset("a").rpm == 9
    assert own.tenant("acme").rpm == 5
    assert own.tenant("other").rpm == TenantConfig().rpm


def test_a_latency_prior_is_optional_and_the_star_entry_gives_it_to_the_rest() -> None:
    assert config().asset("a").latency is None
    priors = config(
        assets={"a": {"latency": {"median_s": 20}}, "*": {"latency": {"median_s": 5, "sigma": 1}}}
    )
    assert priors.asset("a").latency == LatencyPrior(median_s=20, sigma=0.5)
    assert priors.asset("other").latency == LatencyPrior(median_s=5, sigma=1)


def test_known_assets_are_those_of_the_chains() -> None:
    body = {
        "s": {"assets": ["a", "b"], "fields": ["x"]},
        "t": {"asset_id": "c", "fields": ["y"]},
    }
    assert config(sections=body).known_assets() == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("sections", "extra", "problem"),
    [
        ({"s": {"fields": ["x"]}}, {}, "give asset_id or assets"),
        ({"s": {"asset_id": "a", "assets": ["b", "a"], "fields": ["x"]}}, {}, "must be the first"),
        ({"s": {"assets": ["a", "a"], "fields": ["x"]}}, {}, "only once in a chain"),
        ({"s": {"assets": ["a b"], "fields": ["x"]}}, {}, "not valid"),
        ({"s": {"assets": ["*"], "fields": ["x"]}}, {}, "not valid"),
        ({"s": {"asset_id": "a", "fields": ["x"]}}, {"assets": {"a": {"rpm": 0}}}, "assets.a.rpm"),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"assets": {"a": {"breaker": {"failure_ratio": 2}}}},
            "assets.a.breaker.failure_ratio",
        ),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"tenants": {"acme": {"on_budget": "pray"}}},
            "tenants.acme.on_budget",
        ),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"tenants": {"acme": {"budget_day": -1}}},
            "tenants.acme.budget_day",
        ),
        ({"s": {"asset_id": "a", "fields": ["x"]}}, {"tenants": {"a b": {}}}, "tenant 'a b'"),
        ({"s": {"asset_id": "a", "fields": ["x"]}}, {"assets": {"a/b": {}}}, "asset id 'a/b'"),
        ({"s": {"asset_id": "a", "fields": ["x"]}}, {"assets": {"a": {"bogus": 1}}}, "bogus"),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"assets": {"a": {"latency": {"median_s": 0}}}},
            "assets.a.latency.median_s",
        ),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"assets": {"a": {"latency": {"median_s": 20, "sigma": 4}}}},
            "assets.a.latency.sigma",
        ),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"assets": {"a": {"latency": {"sigma": 0.5}}}},
            "assets.a.latency.median_s",
        ),
        (
            {"s": {"asset_id": "a", "fields": ["x"]}},
            {"assets": {"a": {"latency": {"median_s": 20, "p99_s": 60}}}},
            "assets.a.latency.p99_s",
        ),
    ],
)
def test_a_bad_file_names_the_problem(
    tmp_path: Path, sections: dict[str, Any], extra: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        load(tmp_path, {"sections": sections, **extra})


def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)  # a folder


def test_a_section_is_a_conversation_by_default_and_needs_the_platform():
    section = SectionConfig(asset_id="a", fields=("x",))
    assert section.kind == "conversation" and section.needs_platform
    assert section.chain == ("a",)


def test_a_kind_without_platform_names_no_asset():
    section = SectionConfig(kind="profile_table", fields=("table_file",))
    assert not section.needs_platform and section.chain == ()
    with pytest.raises(ValueError, match="calls no asset"):
        SectionConfig(kind="profile_table", asset_id="a", fields=("table_file",))


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        SectionConfig(kind="poetry", asset_id="a", fields=("x",))


def test_progress_reads_in_the_kinds_unit():
    assert progress_text("transform_table", 3, 10) == "chunks 3/10"
    assert progress_text("", 1, 2) == "1/2"
    assert progress_text("profile_table", 40, 100) == "profiled 40%"
    assert needs_platform("unknown") and not needs_platform("profile_table")


# -- sections that continue another's conversation ------------------------------------------


def test_the_repository_chat_continues_the_document_section_and_carries_its_name() -> None:
    loaded = load_config(ROOT / "config.json")
    chat = loaded.sections["document_chat"]
    assert (chat.continues, chat.carry) == ("document_section", ("section_name",))
    assert set(loaded.sections["document_section"].chain) <= set(chat.chain)
    assert loaded.sections["document_section"].continues == ""


def _continuing(**chat: Any) -> dict[str, Any]:
    return {
        "sections": {
            "doc": {"assets": ["a", "b"], "fields": ["content"]},
            "chat": {"assets": ["a", "b"], "fields": ["message"], **chat},
        }
    }


@pytest.mark.parametrize(
    ("chat", "problem"),
    [
        ({"continues": "nowhere"}, "continues 'nowhere', which is not another configured"),
        ({"continues": "chat"}, "continues 'chat', which is not another configured"),
        ({"carry": ["x"]}, "carry needs continues"),
        (
            {"continues": "doc", "assets": ["a"]},
            r"must hold every asset 'doc' may answer on; missing \['b'\]",
        ),
        ({"continues": "doc", "fields": ["continue_task_id"]}, "cannot identify a section"),
    ],
)
def test_a_bad_continuation_is_named(chat: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PlatformConfig.model_validate(_continuing(**chat))


def test_a_section_may_not_continue_one_that_continues() -> None:
    body = _continuing(continues="doc")
    body["sections"]["more"] = {"assets": ["a", "b"], "fields": ["more"], "continues": "chat"}
    with pytest.raises(ValueError, match="continues a section that continues another"):
        PlatformConfig.model_validate(body)


def test_a_valid_continuation_loads() -> None:
    loaded = PlatformConfig.model_validate(_continuing(continues="doc", carry=["content"]))
    assert loaded.sections["chat"].continues == "doc"
