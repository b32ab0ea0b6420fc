"""Platform service accounts: the file's validation, which account a tenant gets, the setting
that loads them at start-up, and submissions without credentials."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from common.errors import InvalidInput
from common.principals import Principal, Role
from orchestrator.accounts import Accounts, AccountsError, load_accounts, parse_accounts
from orchestrator.config import load_config
from orchestrator.credentials import Sealer, decode_key, new_key
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.worker_client import Outcome, SectionJob
from tests.orchestrator.fakes import FakePeers, FakeStorage, FakeWorker, eventually, pool_of, room

CONFIG = Path(__file__).resolve().parents[2] / "config.json"
SECRET = "Sv-Acct-Pa55word"
ACME = {"tenant": "wealth", "username": "prism@acme.example", "password": SECRET}
ANY = {"tenant": "shared", "username": "prism@example.com", "password": "other-" + SECRET}
RECORD = json.dumps({"top_movers_data": "AAPL +3%"})


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "accounts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- the file -------------------------------------------------------------------------------


def test_a_tenant_gets_its_own_account_else_the_default_one() -> None:
    accounts = parse_accounts({"acme": ACME, "*": ANY})
    assert accounts.for_tenant("acme").username == ACME["username"]
    assert accounts.for_tenant("acme").password.get_secret_value() == SECRET
    assert accounts.for_tenant("globex").username == ANY["username"]
    assert accounts.for_tenant("").tenant == "shared"
    assert accounts.tenants == ["*", "acme"]
    assert len(accounts) == 2


def test_without_a_default_another_tenant_has_no_account() -> None:
    accounts = parse_accounts({"acme": ACME})
    with pytest.raises(
        InvalidInput, match="no platform service account is configured for tenant 'globex'"
    ):
        accounts.for_tenant("globex")
    with pytest.raises(InvalidInput, match="callers without a tenant"):
        accounts.for_tenant("")


def test_no_accounts_at_all_refuses_every_tenant() -> None:
    with pytest.raises(InvalidInput, match="username, password: required"):
        Accounts().for_tenant("acme")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([ACME], "must be a JSON object"),
        ({}, "has no account"),
        ({"bad tenant!": ACME}, "entry 1: the key must be '\\*' or a tenant name"),
        ({"acme": {**ACME, "password": ""}}, "entry 'acme': password: Value should have at least"),
        ({"acme": {**ACME, "tenant": "a b"}}, "entry 'acme': tenant: String should match"),
        ({"acme": {"tenant": "t", "username": "u"}}, "entry 'acme': password: Field required"),
        ({"acme": {**ACME, "extra": SECRET}}, "entry 'acme': extra: Extra inputs"),
        ({"acme": "not an object"}, "entry 'acme': \\(entry\\): Input should be"),
    ],
)
def test_a_bad_file_names_the_problem_and_never_a_value(raw: object, problem: str) -> None:
    with pytest.raises(AccountsError, match=problem) as caught:
        parse_accounts(raw)
    assert SECRET not in str(caught.value)


def test_load_reads_and_validates_the_file(tmp_path: Path) -> None:
    accounts = load_accounts(write(tmp_path, {"*": ANY}))
    assert accounts.for_tenant("x").username == ANY["username"]


def test_load_names_a_missing_file_and_bad_json_without_its_text(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match="file not found"):
        load_accounts(tmp_path / "nowhere.json")
    with pytest.raises(AccountsError, match=r"not valid JSON \(line 2\)") as caught:
        load_accounts(write(tmp_path, '{"*": {"password":\n' + SECRET + "}"))
    assert SECRET not in str(caught.value)
    with pytest.raises(AccountsError, match="cannot be read"):
        load_accounts(tmp_path)  # a folder


def test_the_setting_loads_the_accounts_and_a_bad_file_stops_start_up(tmp_path: Path) -> None:
    key = new_key()
    good = OrchestratorSettings(
        credential_key=key, platform_accounts_file=write(tmp_path, {"*": ANY})
    )
    assert good.platform_accounts().for_tenant("t").username == ANY["username"]
    assert len(OrchestratorSettings(credential_key=key).platform_accounts()) == 0
    bad = write(tmp_path, {"*": {**ANY, "username": ""}})
    with pytest.raises(ValidationError, match="username: String should have at least") as caught:
        OrchestratorSettings(credential_key=key, platform_accounts_file=bad)
    assert SECRET not in str(caught.value)


# -- submissions without credentials --------------------------------------------------------


@pytest.fixture
async def orch() -> AsyncIterator[tuple[Orchestrator, FakeWorker, Sealer]]:
    worker = FakeWorker("127.0.0.1:7001", reply=room(8))

    def plan(job: SectionJob) -> list[Outcome]:
        return [Outcome(success=True, response="ok", conv_id="c", message_id="m")]

    worker.plan = plan
    sealer = Sealer(decode_key(new_key()))
    deps = Deps(
        storage=FakeStorage().as_client(),
        pool=await pool_of(worker),
        config=load_config(CONFIG),
        sealer=sealer,
        replica_id="r1",
        auth_wait_s=0.5,
    )
    settings = OrchestratorSettings(credential_key=new_key(), lease_ttl_s=5.0, lease_renew_s=1.0)
    accounts = parse_accounts({"acme": ACME, "*": ANY})
    made = Orchestrator(
        settings, deps, b"d" * 32, "addr", peers=cast(Peers, FakePeers()), accounts=accounts
    )
    yield made, worker, sealer
    await made.stop()


ANN = Principal(id="ann", tenant="acme")
GUS = Principal(id="gus", tenant="globex")


async def test_a_task_without_credentials_runs_on_its_tenants_account(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, worker, sealer = orch
    record, _ = await service.submit(ANN, "", "", "", [RECORD])

    assert (record.username, record.tenant) == (ACME["username"], "wealth")
    assert record.principal_tenant == "acme"  # who pays is still the caller's tenant
    assert SECRET not in record.model_dump_json()
    opened = sealer.open(record.password_sealed, record.task_id, "wealth", ACME["username"])
    assert opened == SECRET
    await eventually(lambda: record.task_id not in service.runs, what="task finished")
    (login,) = worker.authentications
    assert (login.tenant, login.username, login.password) == ("wealth", ACME["username"], SECRET)


async def test_another_tenant_without_credentials_gets_the_default_account(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, _, _ = orch
    record, _ = await service.submit(GUS, "", "", "", [RECORD])
    assert (record.username, record.tenant) == (ANY["username"], "shared")


async def test_a_tenant_other_than_the_accounts_is_refused(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, _, _ = orch
    with pytest.raises(InvalidInput, match="tenant: a task without credentials"):
        await service.submit(ANN, "", "", "acme", [RECORD])
    record, _ = await service.submit(ANN, "", "", "wealth", [RECORD])
    assert record.tenant == "wealth"


async def test_half_the_credentials_are_still_bad_input(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, _, _ = orch
    with pytest.raises(InvalidInput, match="password: required"):
        await service.submit(ANN, "alice", "", "", [RECORD])
    with pytest.raises(InvalidInput, match="username: required"):
        await service.submit(ANN, "", "pw", "", [RECORD])


async def test_credentials_given_are_used_as_before(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, _, _ = orch
    record, _ = await service.submit(ANN, "alice", "pw", "", [RECORD])
    assert (record.username, record.tenant) == ("alice", "acme")
    admin = Principal(id="ops", tenant="", role=Role.ADMIN)
    record, _ = await service.submit(admin, "", "", "", [RECORD])
    assert record.username == ANY["username"]  # an admin without a tenant: the default


async def test_without_any_account_a_task_needs_credentials(
    orch: tuple[Orchestrator, FakeWorker, Sealer],
) -> None:
    service, _, _ = orch
    service.accounts = Accounts()
    with pytest.raises(InvalidInput, match="no platform service account is configured"):
        await service.submit(ANN, "", "", "", [RECORD])
