"""The platform's configuration in bench.peers: the scenario's latency as every asset's prior,
in a file the workers load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.peers.compare import PRIOR_FLOOR_S, chosen, config_with_priors, parse_args
from bench.scenarios import PEER_SATURATION, PEER_STEADY
from common.platform_config import LatencyPrior, load_config


def test_every_asset_gets_the_scenarios_latency_as_its_prior(tmp_path: Path) -> None:
    config = load_config(config_with_priors(PEER_STEADY, tmp_path / "config.json"))
    assert config.assets
    for asset in config.assets.values():
        assert asset.latency == LatencyPrior(median_s=20, sigma=0.5)


def test_answers_at_once_are_a_prior_of_the_floor(tmp_path: Path) -> None:
    config = load_config(config_with_priors(PEER_SATURATION, tmp_path / "config.json"))
    assert {a.latency for a in config.assets.values()} == {
        LatencyPrior(median_s=PRIOR_FLOOR_S, sigma=0.0)
    }


def test_no_prior_turns_it_off_in_every_scenario() -> None:
    assert [sc.prior for sc in chosen(parse_args(["--scenario", "all"]))] == [True, False, True]
    assert not any(sc.prior for sc in chosen(parse_args(["--scenario", "all", "--no-prior"])))
    assert dataclasses.replace(PEER_STEADY, prior=False) in chosen(
        parse_args(["--scenario", "steady", "--no-prior"])
    )
