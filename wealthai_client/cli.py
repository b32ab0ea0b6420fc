"""``wealthai``: the platform from a shell, on the sync client.

Exit codes, for scripts:

- 0: done (a watched task completed);
- 1: a task ended in ``error`` or ``cancelled``, or the platform refused or failed the command
  (unknown task, a key it does not accept, a conflict, too many calls, a 5xx);
- 2: bad input: a file that cannot be read, JSON that does not parse, a task or an argument the
  gateway (or the same checks here) finds invalid (400, 413, 422), bad usage;
- 3: unreachable: connection refused, a name that does not resolve, a timeout.

The gateway's URL and the API key come from ``--url``, ``WEALTHAI_URL`` and
``WEALTHAI_API_KEY``, or the configuration file (:mod:`wealthai_client.config`). The key has no
option on purpose: a command line is visible to every user of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import typer

from gateway.models import StatusResponse, TaskStatusName
from wealthai_client.client import Client
from wealthai_client.config import ENV_CONFIG, resolve
from wealthai_client.display import Printer, money
from wealthai_client.errors import BadInput, Unreachable, WealthAIError

OK, TASK_FAILED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3

app = typer.Typer(
    name="wealthai",
    help="The Wealth AI Task Platform from the command line: submit tasks and watch them run, "
    "read results, move files, manage API keys.\n\n"
    "The gateway and the key come from WEALTHAI_URL and WEALTHAI_API_KEY, else from "
    "$WEALTHAI_CONFIG or ~/.config/wealthai/config.toml (url = ..., api_key = ...).\n\n"
    "Exit codes: 0 done, 1 the task failed or the platform refused the command, 2 bad input, "
    "3 the gateway is unreachable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(
    help="API keys: create, list, revoke (needs an admin key).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")

TaskId = Annotated[str, typer.Argument(help="The task's id, task_<YYYYMMDDHHMMSS>_<8 hex>.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the gateway's answer as JSON.")]


class _Options:
    url: str | None = None
    config: Path | None = None


_options = _Options()


@app.callback()
def _main(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The gateway's base URL (else WEALTHAI_URL, the config file, or "
            "http://127.0.0.1:8000).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Configuration file to read instead of $WEALTHAI_CONFIG or "
            "~/.config/wealthai/config.toml.",
            show_default=False,
        ),
    ] = None,
) -> None:
    _options.url = url
    _options.config = config


@contextlib.contextmanager
def _client() -> Iterator[Client]:
    env = dict(os.environ)
    if _options.config is not None:
        env[ENV_CONFIG] = str(_options.config)
    with Client(config=resolve(_options.url, env=env)) as client:
        yield client


def _ended(status: str) -> int:
    return TASK_FAILED if status in ("error", "cancelled") else OK


def _read_task(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInput(f"{path}: {reason}") from None
    try:
        task = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(task, dict):
        raise BadInput(f"{path}: a task is a JSON object {{username?, password?, data: [...]}}")
    return task


def _watch(client: Client, printer: Printer, task_id: str) -> int:
    """Shows the task until it finishes, then its cost; the exit code of how it ended."""
    last: StatusResponse | None = None
    with printer.watcher() as shown:
        for update in client.watch(task_id):
            shown.update(update)
            last = update.status
    assert last is not None
    result = client.result(task_id)
    if printer.as_json:
        printer.json(result)
    else:
        style = {"completed": "bold green"}.get(result.status, "bold red")
        printer.line(
            f"{result.status}: {result.message} in {result.elapsed_seconds:.1f}s", style=style
        )
        for section in last.sections:
            if section.error:
                printer.line(f"  {section.name}: {section.error}", style="red")
        printer.line(f"Cost: {money(result.cost)}", style="bold")
    return _ended(result.status)


@app.command()
def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="The task as JSON: {username?, password?, tenant?, data: [records]} ('-' reads "
            "standard input).",
            show_default=False,
        ),
    ],
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Follow the task until it finishes: a bar per section, then "
            "the cost; the exit code says how it ended.",
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Submit safely again: the same key and task give the first task back.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Submit a task; print its id (with --watch, follow it to the end)."""
    printer = Printer(as_json)
    task = _read_task(file)
    with _client() as client:
        submitted = client.submit(task, idempotency_key=idempotency_key)
        if not watch:
            if as_json:
                printer.json(submitted)
            else:
                printer.line(submitted.task_id)
            return
        if not as_json:
            printer.line(f"submitted {submitted.task_id}")
        raise typer.Exit(_watch(client, printer, submitted.task_id))


@app.command("watch")
def watch_task(task_id: TaskId, as_json: AsJson = False) -> None:
    """Follow a task until it finishes: a bar per section, then the cost."""
    with _client() as client:
        raise typer.Exit(_watch(client, Printer(as_json), task_id))


@app.command()
def status(task_id: TaskId, as_json: AsJson = False) -> None:
    """Show a task's status, progress and sections (exit 1 if it ended in error or cancelled)."""
    printer = Printer(as_json)
    with _client() as client:
        found = client.status(task_id)
    if as_json:
        printer.json(found)
    else:
        printer.status(found)
    raise typer.Exit(_ended(found.status))


@app.command()
def result(task_id: TaskId, as_json: AsJson = False) -> None:
    """Show a task's result: each section's answer and cost, and the total cost (exit 1 if it
    ended in error or cancelled)."""
    printer = Printer(as_json)
    with _client() as client:
        found = client.result(task_id)
    if as_json:
        printer.json(found)
        raise typer.Exit(_ended(found.status))
    printer.fields(
        [
            ("task", found.task_id),
            ("status", found.status),
            ("message", found.message),
            ("cost", money(found.cost)),
            ("elapsed", f"{found.elapsed_seconds:.1f}s"),
        ]
    )
    for name, section in found.data.items():
        printer.line("")
        printer.line(f"{name}: {section.status} {money(section.cost)}", style="bold")
        if section.error:
            printer.line(section.error, style="red")
        if section.response:
            printer.line(section.response)
        if section.result is not None:
            printer.line(json.dumps(section.result, indent=2))
        for produced in section.files:
            printer.line(f"file {produced.file_id} {produced.name} ({produced.size} bytes)")
    raise typer.Exit(_ended(found.status))


@app.command()
def tasks(
    status_: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="Only tasks in this state: pending, authenticating, authenticated, "
            "detecting_section, processing, completed, error, cancelled.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Tasks per page, 1-100.")] = 20,
    page_token: Annotated[
        str | None,
        typer.Option(
            "--page-token", help="The next page token a listing printed.", show_default=False
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List your tasks, newest first (an admin's: everyone's)."""
    printer = Printer(as_json)
    states: tuple[TaskStatusName, ...] = get_args(TaskStatusName)
    chosen = next((s for s in states if s == status_), None)
    if status_ is not None and chosen is None:
        raise BadInput(f"--status: one of {', '.join(states)}")
    with _client() as client:
        page = client.tasks(status=chosen, limit=limit, page_token=page_token)
    if as_json:
        printer.json(page)
        return
    printer.table(
        ["task", "status", "progress", "cost", "sections", "created", "owner"],
        [
            [
                t.task_id,
                t.status,
                f"{t.progress}%",
                money(t.cost),
                t.section_detected,
                t.created_at,
                t.owner,
            ]
            for t in page.tasks
        ],
    )
    if page.next_page_token:
        printer.note(f"next page: --page-token {page.next_page_token}")


def _changed(found: StatusResponse, as_json: bool) -> None:
    printer = Printer(as_json)
    if as_json:
        printer.json(found)
    else:
        printer.status(found)


@app.command()
def cancel(task_id: TaskId, as_json: AsJson = False) -> None:
    """Cancel a task: its running sections stop, it ends cancelled."""
    with _client() as client:
        _changed(client.cancel(task_id), as_json)


@app.command()
def retry(task_id: TaskId, as_json: AsJson = False) -> None:
    """Run again the failed sections of a task that ended in error."""
    with _client() as client:
        _changed(client.retry(task_id), as_json)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="The file to upload.", show_default=False)],
    name: Annotated[
        str | None, typer.Option(help="Its name on the platform (default: the file's).")
    ] = None,
    content_type: Annotated[
        str | None,
        typer.Option("--content-type", help="Its MIME type (default: guessed from the name)."),
    ] = None,
    temporary: Annotated[
        bool,
        typer.Option(help="A temporary input: deleted right after the task that uses it ends."),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Upload a file, streamed, with a bar of the bytes sent; print its file id."""
    printer = Printer(as_json)
    bar = printer.bytes_bar(f"upload {file.name}")
    with _client() as client, bar or contextlib.nullcontext():
        stored = client.upload(
            file, name=name, content_type=content_type, temporary=temporary, progress=bar
        )
    if as_json:
        printer.json(stored)
    elif printer.rich:
        printer.fields(
            [
                ("file", stored.file_id),
                ("name", stored.name),
                ("size", f"{stored.size} bytes"),
                ("sha256", stored.sha256),
                ("expires", stored.expires_at),
            ]
        )
    else:
        printer.line(stored.file_id)


@app.command()
def download(
    file_id: Annotated[str, typer.Argument(help="The file's id, f_<32 hex>_<24 hex>.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write it: a path, or a folder to put it in under "
            "its own name (default: the current folder).",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Download a file, streamed, with a bar of the bytes received; its SHA-256 is checked."""
    printer = Printer(as_json)
    bar = printer.bytes_bar(f"download {file_id[:12]}…")
    with _client() as client, bar or contextlib.nullcontext():
        saved = client.download(file_id, output, progress=bar)
    if as_json:
        printer.json(
            {
                "path": str(saved.path),
                "size": saved.size,
                "sha256": saved.sha256,
                "content_type": saved.content_type,
            }
        )
    else:
        printer.line(str(saved.path))


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="Who holds the key (letters, digits, ._@-).")],
    tenant: Annotated[str, typer.Option(help="The holder's tenant.", show_default=False)],
    role: Annotated[
        str, typer.Option(help="client (its own tasks) or admin (everything, keys too).")
    ] = "client",
    as_json: AsJson = False,
) -> None:
    """Create an API key for <tenant>/<name>; the key is printed this once only."""
    if role not in ("client", "admin"):
        raise BadInput("--role: client or admin")
    chosen: Literal["client", "admin"] = "admin" if role == "admin" else "client"
    printer = Printer(as_json)
    with _client() as client:
        created = client.create_key(name, tenant, chosen)
    if as_json:
        printer.json(created)
    elif printer.rich:
        printer.fields([("key id", created.key_id), ("principal", created.principal_id)])
        printer.line(created.key, style="bold")
        printer.line("Keep the key now: it is stored only as a hash.", style="yellow")
    else:
        printer.line(created.key)


@keys_app.command("list")
def list_keys(as_json: AsJson = False) -> None:
    """List every API key, revoked ones too (never the keys themselves)."""
    printer = Printer(as_json)
    with _client() as client:
        found = client.keys()
    if as_json:
        printer.json(found)
        return
    printer.table(
        ["key id", "principal", "role", "created", "revoked"],
        [[k.key_id, k.principal_id, k.role, k.created_at, k.revoked_at or ""] for k in found.keys],
    )


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (12 hex digits).")],
    as_json: AsJson = False,
) -> None:
    """Revoke an API key (it stays listed, with when it was revoked)."""
    printer = Printer(as_json)
    with _client() as client:
        revoked = client.revoke_key(key_id)
    if as_json:
        printer.json(revoked)
    else:
        printer.line(f"revoked {revoked.key_id} ({revoked.principal_id}) at {revoked.revoked_at}")


def exit_code(error: WealthAIError) -> int:
    """The exit code of a failed command."""
    if isinstance(error, Unreachable):
        return UNREACHABLE
    if isinstance(error, BadInput):
        return BAD_INPUT
    return TASK_FAILED


def run(args: list[str]) -> int:
    """Runs the command line on ``args``; its exit code."""
    try:
        app(args, prog_name="wealthai")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except WealthAIError as exc:
        printer = Printer()
        if exc.errors:  # one line per field the gateway names
            printer.error(f"{exc.code or exc.status}:")
            for problem in exc.errors:
                printer.error(f"  {problem.get('field', '')}: {problem.get('reason', '')}")
        else:
            printer.error(str(exc))
        return exit_code(exc)
    return OK


def main() -> None:
    """The ``wealthai`` entry point."""
    sys.exit(run(sys.argv[1:]))
