"""One job's use of the platform with the access token the job was given.

The worker never sees the user's password during a job: the orchestrator authenticates once per
task and hands each job the token. A token the platform rejects (401) is therefore not renewed
here; :class:`~section_worker.platform_client.TokenRejected` ends the job, which reports it so
the orchestrator renews the token and sends the job again. Every HTTP attempt is counted so a
job can report its ``platform_calls``. The calls that open an attempt on an asset (create,
send) take the fallback chain's retries (:meth:`Retries.chain`); polls of a prompt already sent
keep the default ones, since giving up on a paid prompt costs more than waiting for it.
"""

from __future__ import annotations

from section_worker.platform_client import Answer, CallCount, PlatformClient, Retries


class PlatformSession:
    """One job's platform calls, all made with ``token``; ``calls`` counts every HTTP attempt."""

    def __init__(self, client: PlatformClient, token: str, opening: Retries | None = None) -> None:
        self._client = client
        self._token = token
        self._opening = opening
        self.calls = CallCount()

    async def create_conversation(self, asset_id: str) -> str:
        return await self._client.create_conversation(
            self._token, asset_id, counter=self.calls, retries=self._opening
        )

    async def send_prompt(self, conv_id: str, message: str) -> str:
        return await self._client.send_prompt(
            self._token, conv_id, message, counter=self.calls, retries=self._opening
        )

    async def poll(self, conv_id: str, message_id: str) -> Answer:
        return await self._client.poll(self._token, conv_id, message_id, counter=self.calls)
