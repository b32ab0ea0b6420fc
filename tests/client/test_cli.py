"""The ``wealthai`` command line in-process against a scripted gateway, its stdout not a
terminal: what each command prints (plain lines, JSON), its exit codes, and --help everywhere.
The same command line on a terminal, against the real platform, is in tests/e2e/test_cli.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import typer

from tests.client.conftest import FILE_ID, KEY, TASK_ID, Scripted, answer, event_line, status_body
from tests.client.test_files import download_of, echo_upload
from tests.helpers import free_port
from wealthai_client import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    WealthAIError,
)
from wealthai_client.cli import app, exit_code, run
from wealthai_client.config import ConfigError

STATUS = f"/task/{TASK_ID}/status"
RESULT = f"/task/{TASK_ID}/result"
EVENTS = f"/task/{TASK_ID}/events"
ACCEPTED = {
    "task_id": TASK_ID,
    "status": "pending",
    "message": "Task submitted successfully",
    "created_at": "2026-12-01T12:00:00",
}
TASK = {"username": "u@example.com", "password": "pw", "data": [{"top_movers_data": "AAPL +1%"}]}


@pytest.fixture(autouse=True)
def gateway(scripted: Scripted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Scripted:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WEALTHAI_CONFIG", raising=False)
    monkeypatch.setenv("WEALTHAI_URL", scripted.url)
    monkeypatch.setenv("WEALTHAI_API_KEY", KEY)
    return scripted


def result_body(state: str = "completed", error: str = "") -> dict[str, Any]:
    section = {
        "status": state,
        "response": '{"insight": "fine"}',
        "cost": 0.1234,
        "conv_id": "c1",
        "message_id": "m1",
        "error": error,
        "files": [
            {
                "file_id": FILE_ID,
                "name": "out.md",
                "content_type": "text/markdown",
                "size": 12,
                "sha256": "0" * 64,
            }
        ],
    }
    return {
        "task_id": TASK_ID,
        "status": state,
        "section_detected": "top_movers",
        "conv_id": "c1",
        "message_id": "m1",
        "data": {"top_movers": section},
        "cost": 0.1234,
        "elapsed_seconds": 2.5,
        "message": "All 1 sections completed",
    }


def write_task(tmp_path: Path, content: str) -> str:
    path = tmp_path / "task.json"
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadInput("x"), 2),
        (ConfigError("x"), 2),
        (Unreachable("x"), 3),
        (NotFound("x"), 1),
        (Unauthorized("x"), 1),
        (Forbidden("x"), 1),
        (Conflict("x"), 1),
        (RateLimited("x"), 1),
        (ServerError("x"), 1),
    ],
)
def test_exit_codes_by_error(error: WealthAIError, code: int) -> None:
    assert exit_code(error) == code


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    group = typer.main.get_command(app)
    commands = [[name] for name in group.commands if name != "keys"]  # type: ignore[attr-defined]
    commands += [["keys", sub] for sub in ("create", "list", "revoke")]
    assert len(commands) >= 12
    for command in [[], ["keys"], *commands]:
        assert run([*command, "--help"]) == 0, command
        shown = capsys.readouterr().out
        assert "Usage: wealthai" in shown and "--help" in shown, command
        assert len(shown.splitlines()) > 4, command


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a task is a JSON object"),
        ('{"data": []}', "data: List should have at least 1 item"),
    ],
)
def test_a_task_file_that_cannot_be_submitted_is_bad_input(
    gateway: Scripted,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    problem: str,
) -> None:
    path = write_task(tmp_path, content) if content is not None else str(tmp_path / "absent.json")
    assert run(["submit", path]) == 2
    assert problem in capsys.readouterr().err
    assert gateway.seen == []


def test_the_gateways_refusal_lists_each_field(
    gateway: Scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = [{"field": "body.data.0", "reason": "matches no section"}]
    body = {"error": "invalid_input", "detail": "body.data.0: matches no section", "errors": errors}
    gateway.reply("POST", "/task/submit", 422, body)
    assert run(["submit", write_task(tmp_path, json.dumps(TASK))]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: invalid_input:",
        "error:   body.data.0: matches no section",
    ]


def test_submit_prints_the_task_id_or_json(
    gateway: Scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.on("POST", "/task/submit", answer(202, ACCEPTED))
    path = write_task(tmp_path, json.dumps(TASK))
    assert run(["submit", path]) == 0
    assert capsys.readouterr().out == f"{TASK_ID}\n"
    assert run(["submit", path, "--json", "--idempotency-key", "once"]) == 0
    assert json.loads(capsys.readouterr().out) == ACCEPTED
    assert gateway.requests("POST", "/task/submit")[1].headers["Idempotency-Key"] == "once"


def test_submit_watch_prints_plain_progress_and_the_cost(
    gateway: Scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.on("POST", "/task/submit", answer(202, ACCEPTED))
    gateway.on(
        "GET",
        STATUS,
        answer(200, status_body("processing", 50)),
        answer(200, status_body("completed", 100)),
    )
    gateway.on(
        "GET",
        EVENTS,
        answer(
            200, raw=event_line("completed", 100), headers={"Content-Type": "text/event-stream"}
        ),
    )
    gateway.reply("GET", RESULT, 200, result_body())
    assert run(["submit", write_task(tmp_path, json.dumps(TASK)), "--watch"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: no bars, no colours
    assert out.splitlines() == [
        f"submitted {TASK_ID}",
        "processing 50% top_movers=running",
        "completed 100% top_movers=running",
        "completed: All 1 sections completed in 2.5s",
        "Cost: $0.1234",
    ]


def test_submit_watch_json_prints_the_result_alone(
    gateway: Scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.on("POST", "/task/submit", answer(202, ACCEPTED))
    gateway.on("GET", STATUS, answer(200, status_body("completed", 100)))
    gateway.reply("GET", RESULT, 200, result_body())
    assert run(["submit", write_task(tmp_path, json.dumps(TASK)), "--watch", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)  # the whole of stdout: no progress lines
    assert (shown["task_id"], shown["status"], shown["cost"]) == (TASK_ID, "completed", 0.1234)


def test_a_watched_task_that_fails_exits_1_with_its_errors(
    gateway: Scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = status_body("error", 100)
    failed["sections"][0].update(status="error", error="every asset failed")
    gateway.on("GET", STATUS, answer(200, failed))
    gateway.reply("GET", RESULT, 200, result_body("error", "every asset failed"))
    assert run(["watch", TASK_ID]) == 1
    out = capsys.readouterr().out
    assert "  top_movers: every asset failed" in out
    assert out.endswith("Cost: $0.1234\n")


def test_status_prints_fields_and_exits_by_how_the_task_ended(
    gateway: Scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.on("GET", STATUS, answer(200, status_body("processing", 50)))
    assert run(["status", TASK_ID]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"task: {TASK_ID}",
        "status: processing",
        "progress: 50%",
        "message: processing now",
        "  top_movers: running",
    ]
    gateway.on("GET", STATUS, answer(200, status_body("cancelled", 100)))
    assert run(["status", TASK_ID, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"


def test_result_prints_each_section_or_json(
    gateway: Scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway.reply("GET", RESULT, 200, result_body())
    assert run(["result", TASK_ID]) == 0
    out = capsys.readouterr().out
    assert "cost: $0.1234" in out
    assert "top_movers: completed $0.1234" in out
    assert '{"insight": "fine"}' in out
    assert f"file {FILE_ID} out.md (12 bytes)" in out
    assert run(["result", TASK_ID, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["top_movers"]["cost"] == 0.1234


def test_tasks_prints_tab_separated_rows_and_the_next_page_apart(
    gateway: Scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = {
        "task_id": TASK_ID,
        "status": "completed",
        "progress": 100,
        "message": "",
        "section_detected": "top_movers",
        "cost": 0.5,
        "created_at": "2026-12-01T12:00:00",
        "updated_at": "2026-12-01T12:00:01",
        "owner": "acme/ann",
        "tenant": "acme",
    }
    gateway.reply(
        "GET", "/tasks", 200, {"tasks": [summary], "count": 1, "next_page_token": TASK_ID}
    )
    assert run(["tasks", "--status", "completed", "-n", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "task\tstatus\tprogress\tcost\tsections\tcreated\towner",
        f"{TASK_ID}\tcompleted\t100%\t$0.5000\ttop_movers\t2026-12-01T12:00:00\tacme/ann",
    ]
    assert captured.err == f"next page: --page-token {TASK_ID}\n"
    assert gateway.requests("GET", "/tasks")[0].query == {"limit": "1", "status": "completed"}
    assert run(["tasks", "--status", "finished"]) == 2
    assert "--status: one of pending," in capsys.readouterr().err


def test_a_refused_command_exits_1_with_the_gateways_reason(
    gateway: Scripted, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = {"error": "wrong_state", "detail": "task is completed: nothing to cancel"}
    gateway.reply("POST", f"/task/{TASK_ID}/cancel", 409, refusal)
    assert run(["cancel", TASK_ID]) == 1
    assert capsys.readouterr().err == (
        "error: task is completed: nothing to cancel (wrong_state)\n"
    )
    gateway.reply("POST", f"/task/{TASK_ID}/retry", 200, status_body("processing", 50))
    assert run(["retry", TASK_ID]) == 0
    assert "status: processing" in capsys.readouterr().out
    gateway.reply("GET", STATUS, 404, {"error": "not_found", "detail": "no such task"})
    assert run(["status", TASK_ID]) == 1


def test_keys_commands(gateway: Scripted, capsys: pytest.CaptureFixture[str]) -> None:
    key = {
        "key_id": "0123456789ab",
        "name": "ann",
        "tenant": "acme",
        "role": "client",
        "principal_id": "acme/ann",
        "created_at": "2026-12-01T12:00:00",
        "revoked_at": None,
    }
    gateway.reply("POST", "/admin/keys", 201, {**key, "key": "wak_0123456789ab_new"})
    gateway.reply("GET", "/admin/keys", 200, {"keys": [key], "count": 1})
    gateway.reply("DELETE", "/admin/keys/0123456789ab", 200, {**key, "revoked_at": "later"})
    assert run(["keys", "create", "ann", "--tenant", "acme"]) == 0
    assert capsys.readouterr().out == "wak_0123456789ab_new\n"  # nothing else: scripts keep it
    assert run(["keys", "create", "ann", "--tenant", "acme", "--role", "owner"]) == 2
    assert "--role: client or admin" in capsys.readouterr().err
    assert run(["keys", "list"]) == 0
    assert "0123456789ab\tacme/ann\tclient\t2026-12-01T12:00:00\t" in capsys.readouterr().out
    assert run(["keys", "revoke", "0123456789ab", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] == "later"


def test_upload_and_download_print_the_id_and_the_path(
    gateway: Scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b\n1,2\n")
    gateway.on("POST", "/files", echo_upload())
    assert run(["upload", str(source), "--temporary"]) == 0
    assert capsys.readouterr().out == f"{FILE_ID}\n"
    gateway.on("GET", f"/files/{FILE_ID}", download_of(b"a,b\n1,2\n", name="out.csv"))
    assert run(["download", FILE_ID, "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'out.csv'}\n"
    assert run(["download", FILE_ID, "-o", str(tmp_path / "x.csv"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()


def test_nothing_listening_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEALTHAI_URL", f"http://127.0.0.1:{free_port()}")
    assert run(["status", TASK_ID]) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_the_url_and_config_options(
    gateway: Scripted,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["--url", "ftp://x", "status", TASK_ID]) == 2
    assert "url: an http:// or https:// URL" in capsys.readouterr().err
    monkeypatch.delenv("WEALTHAI_URL")
    monkeypatch.delenv("WEALTHAI_API_KEY")
    config = tmp_path / "c.toml"
    config.write_text(f'url = "{gateway.url}"\napi_key = "{KEY}-from-file"\n')
    gateway.reply("GET", STATUS, 200, status_body())
    assert run(["--config", str(config), "status", TASK_ID]) == 0
    assert gateway.requests("GET", STATUS)[0].headers["Authorization"] == f"Bearer {KEY}-from-file"
    assert KEY not in capsys.readouterr().out
