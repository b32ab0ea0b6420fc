"""One job's use of the platform on behalf of one user.

Keeps token handling and call counting out of the job logic: every call takes the user's token
from :class:`~section_worker.platform_client.PlatformClient`'s cache, a token the platform
rejects (401) is replaced once and the call repeated, and every HTTP attempt is counted so a
job can report its ``platform_calls``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from section_worker.platform_client import (
    Answer,
    AuthFailed,
    CallCount,
    Credentials,
    PlatformClient,
    Token,
    TokenRejected,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PlatformSession:
    """One job's use of the platform on behalf of one user.

    Every call takes the user's token from the client's cache (authenticating when there is
    none), and when the platform answers 401 fetches a new token once and repeats the call.
    ``calls`` counts every HTTP attempt made for the job.
    """

    def __init__(self, client: PlatformClient, credentials: Credentials) -> None:
        self._client = client
        self._credentials = credentials
        self.calls = CallCount()

    async def authenticate(self) -> Token:
        return await self._client.authenticate(self._credentials, counter=self.calls)

    async def create_conversation(self, asset_id: str) -> str:
        return await self._with_token(
            lambda token: self._client.create_conversation(token, asset_id, counter=self.calls)
        )

    async def send_prompt(self, conv_id: str, message: str) -> str:
        return await self._with_token(
            lambda token: self._client.send_prompt(token, conv_id, message, counter=self.calls)
        )

    async def poll(self, conv_id: str, message_id: str) -> Answer:
        return await self._with_token(
            lambda token: self._client.poll(token, conv_id, message_id, counter=self.calls)
        )

    async def _with_token(self, call: Callable[[str], Awaitable[T]]) -> T:
        token = await self.authenticate()
        try:
            return await call(token.value)
        except TokenRejected:
            logger.info("platform rejected a cached token; authenticating again")
        token = await self._client.authenticate(
            self._credentials, counter=self.calls, rejected=token
        )
        try:
            return await call(token.value)
        except TokenRejected as exc:
            raise AuthFailed(f"{exc} even right after authenticating again") from None
