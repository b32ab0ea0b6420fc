"""The Wealth AI Task Platform's Python client, sync (:class:`Client`) and async
(:class:`AsyncClient`), speaking the gateway's REST API with the gateway's own models
(:mod:`gateway.models`); and the ``wealthai`` command line (:mod:`wealthai_client.cli`).

::

    from wealthai_client import Client

    with Client() as api:  # WEALTHAI_URL, WEALTHAI_API_KEY or ~/.config/wealthai/config.toml
        task = api.submit({"data": [{"top_movers_data": "AAPL +3.2%"}]})
        final = api.wait(task.task_id)
        print(final.status, api.result(task.task_id).cost)
"""

from typing import TYPE_CHECKING, Any

from wealthai_client.client import Client
from wealthai_client.config import Config, ConfigError
from wealthai_client.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    WaitTimeout,
    WealthAIError,
)
from wealthai_client.files import Downloaded
from wealthai_client.watching import TaskUpdate

if TYPE_CHECKING:
    from wealthai_client.async_client import AsyncClient


def __getattr__(name: str) -> Any:
    # The async client's transport loads aiohttp (a fifth of the command line's start-up), so
    # it is imported when first asked for.
    if name == "AsyncClient":
        from wealthai_client.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "BadInput",
    "Client",
    "Config",
    "ConfigError",
    "Conflict",
    "Downloaded",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "ServerError",
    "TaskUpdate",
    "Unauthorized",
    "Unreachable",
    "WaitTimeout",
    "WealthAIError",
]
