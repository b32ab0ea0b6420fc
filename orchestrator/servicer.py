"""gRPC adapter of the orchestrator: proto messages in, :class:`Orchestrator` calls, proto out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from orchestrator.keys import KeyRecord
from orchestrator.models import TaskRecord
from orchestrator.peers import FORWARDED, principal_of
from orchestrator.service import Orchestrator
from orchestrator.transitions import elapsed_seconds
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


def status_message(record: TaskRecord) -> pb.TaskStatus:
    return pb.TaskStatus(
        task_id=record.task_id,
        status=record.status.value,
        progress=record.progress,
        message=record.message,
        sections=[
            pb.SectionState(
                name=name, status=s.status.value, cost=s.cost, error=s.error, progress=s.progress
            )
            for name, s in record.result_data.items()
        ],
        trace=[
            pb.TraceEntry(
                step=t.step, status=t.status, at=t.at, duration_ms=t.duration_ms, detail=t.detail
            )
            for t in record.trace
        ],
        created_at=record.created_at,
        updated_at=record.updated_at,
        completed_at=record.completed_at or "",
    )


def result_message(record: TaskRecord) -> pb.TaskResult:
    return pb.TaskResult(
        task_id=record.task_id,
        status=record.status.value,
        section_detected=record.section_detected,
        conv_id=record.conv_id,
        message_id=record.message_id,
        data={
            name: pb.SectionOutcome(
                status=s.status.value,
                response=s.response,
                cost=s.cost,
                conv_id=s.conv_id,
                message_id=s.message_id,
                error=s.error,
                asset_id=s.asset_id,
                model_used=s.model_used,
                attempts=[
                    pb.SectionAttempt(
                        asset_id=a.asset_id,
                        outcome=a.outcome,
                        reason=a.reason,
                        cost=a.cost,
                        duration_s=a.duration_s,
                    )
                    for a in s.attempts
                ],
                files=[
                    pb.ResultFile(
                        file_id=f.file_id,
                        name=f.name,
                        content_type=f.content_type,
                        size=f.size,
                        sha256=f.sha256,
                    )
                    for f in s.files
                ],
                result_json=json.dumps(s.result) if s.result is not None else "",
            )
            for name, s in record.result_data.items()
        },
        cost=record.cost,
        elapsed_seconds=elapsed_seconds(record),
        message=record.message,
    )


def _summary(record: TaskRecord) -> pb.TaskSummary:
    return pb.TaskSummary(
        task_id=record.task_id,
        status=record.status.value,
        progress=record.progress,
        message=record.message,
        section_detected=record.section_detected,
        cost=record.cost,
        created_at=record.created_at,
        updated_at=record.updated_at,
        owner=record.principal_id,
        tenant=record.tenant,
    )


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.peers = orchestrator.peers

    async def SubmitTask(
        self,
        request: pb.SubmitTaskRequest,
        context: grpc.aio.ServicerContext[pb.SubmitTaskRequest, pb.SubmitTaskResponse],
    ) -> pb.SubmitTaskResponse:
        record, replayed = await self.orchestrator.submit(
            principal_of(request.caller),
            request.username,
            request.password,
            request.tenant,
            list(request.records_json),
            request.idempotency_key,
        )
        return pb.SubmitTaskResponse(
            task_id=record.task_id,
            status=record.status.value,
            message="Task already submitted with this idempotency key"
            if replayed
            else record.message,
            created_at=record.created_at,
            replayed=replayed,
        )

    def _owner(self, task_id: str, context: grpc.aio.ServicerContext[Req, Resp]) -> str:
        """The replica to forward a call about ``task_id`` to, "" to serve it here."""
        if FORWARDED in tuple(context.invocation_metadata() or ()):
            return ""
        return self.orchestrator.locate(task_id)

    async def GetTaskStatus(
        self,
        request: pb.GetTaskRequest,
        context: grpc.aio.ServicerContext[pb.GetTaskRequest, pb.TaskStatus],
    ) -> pb.TaskStatus:
        owner = self._owner(request.task_id, context)
        caller = principal_of(request.caller)
        if owner and (forwarded := await self.peers.status(owner, request.task_id, caller)):
            return forwarded
        return status_message(await self.orchestrator.get(request.task_id, caller))

    async def GetTaskResult(
        self,
        request: pb.GetTaskRequest,
        context: grpc.aio.ServicerContext[pb.GetTaskRequest, pb.TaskResult],
    ) -> pb.TaskResult:
        owner = self._owner(request.task_id, context)
        caller = principal_of(request.caller)
        if owner and (forwarded := await self.peers.result(owner, request.task_id, caller)):
            return forwarded
        return result_message(await self.orchestrator.get(request.task_id, caller))

    async def ListTasks(
        self,
        request: pb.ListTasksRequest,
        context: grpc.aio.ServicerContext[pb.ListTasksRequest, pb.ListTasksResponse],
    ) -> pb.ListTasksResponse:
        records, token = await self.orchestrator.list(
            principal_of(request.caller),
            request.limit,
            request.status,
            request.page_token,
            request.owner,
            request.tenant,
        )
        return pb.ListTasksResponse(tasks=[_summary(r) for r in records], next_page_token=token)

    async def CancelTask(
        self,
        request: pb.CancelTaskRequest,
        context: grpc.aio.ServicerContext[pb.CancelTaskRequest, pb.TaskStatus],
    ) -> pb.TaskStatus:
        owner = self._owner(request.task_id, context)
        caller = principal_of(request.caller)
        if owner and (forwarded := await self.peers.cancel(owner, request.task_id, caller)):
            return forwarded
        return status_message(await self.orchestrator.cancel(request.task_id, caller))

    async def RetryTask(
        self,
        request: pb.RetryTaskRequest,
        context: grpc.aio.ServicerContext[pb.RetryTaskRequest, pb.TaskStatus],
    ) -> pb.TaskStatus:
        owner = self._owner(request.task_id, context)
        caller = principal_of(request.caller)
        if owner and (forwarded := await self.peers.retry(owner, request.task_id, caller)):
            return forwarded
        return status_message(await self.orchestrator.retry(request.task_id, caller))

    async def WatchTask(
        self,
        request: pb.WatchTaskRequest,
        context: grpc.aio.ServicerContext[pb.WatchTaskRequest, pb.TaskEvent],
    ) -> AsyncIterator[pb.TaskEvent]:
        forwarded = FORWARDED in tuple(context.invocation_metadata() or ())
        caller = principal_of(request.caller)
        async for event in self.orchestrator.watch(request.task_id, caller, forwarded=forwarded):
            yield pb.TaskEvent(
                task_id=event.task_id,
                status=event.status,
                progress=event.progress,
                message=event.message,
                section=event.section,
                at=event.at,
            )

    async def GetStats(
        self,
        request: pb.GetStatsRequest,
        context: grpc.aio.ServicerContext[pb.GetStatsRequest, pb.Stats],
    ) -> pb.Stats:
        stats = await self.orchestrator.stats(all_replicas=request.all_replicas)
        platform = stats.platform
        return pb.Stats(
            workers=stats.workers,
            workers_ready=stats.workers_ready,
            worker_capacity=stats.worker_capacity,
            sections_running=stats.sections_running,
            queue_size=stats.queue_size,
            tasks_running=stats.tasks_running,
            tasks_submitted=stats.tasks_submitted,
            tasks_finished=stats.tasks_finished,
            storage_ok=stats.storage_ok,
            replica_id=stats.replica_id,
            replicas_alive=stats.replicas_alive,
            tasks_taken_over=stats.tasks_taken_over,
            cache_size=stats.cache_size,
            storage_bucket=stats.storage_bucket,
            tasks_by_state=stats.tasks_by_state,
            spend_today_usd=platform.spend_today,
            spend_day=platform.spend_day,
            sections_in_flight=platform.in_flight,
            breakers=platform.breakers,
            replicas_counted=stats.replicas_counted,
        )

    async def GetTaskInput(
        self,
        request: pb.GetTaskRequest,
        context: grpc.aio.ServicerContext[pb.GetTaskRequest, pb.TaskInput],
    ) -> pb.TaskInput:
        record = await self.orchestrator.input(request.task_id, principal_of(request.caller))
        return pb.TaskInput(
            task_id=record.task_id,
            records_json=[json.dumps(r) for r in record.data],
            owner=record.principal_id,
            tenant=record.tenant,
        )

    # -- API keys (SPEC §10) ----------------------------------------------------------------

    @staticmethod
    def _api_key(record: KeyRecord) -> pb.ApiKey:
        return pb.ApiKey(
            key_id=record.key_id,
            name=record.name,
            tenant=record.tenant,
            role=record.role.value,
            principal_id=record.principal.id,
            created_at=record.created_at,
            revoked_at=record.revoked_at or "",
        )

    async def CreateKey(
        self,
        request: pb.CreateKeyRequest,
        context: grpc.aio.ServicerContext[pb.CreateKeyRequest, pb.CreateKeyResponse],
    ) -> pb.CreateKeyResponse:
        record, key = await self.orchestrator.keys.create(
            principal_of(request.caller), request.name, request.tenant, request.role
        )
        return pb.CreateKeyResponse(api_key=self._api_key(record), key=key)

    async def ListKeys(
        self,
        request: pb.ListKeysRequest,
        context: grpc.aio.ServicerContext[pb.ListKeysRequest, pb.ListKeysResponse],
    ) -> pb.ListKeysResponse:
        records = await self.orchestrator.keys.list(principal_of(request.caller))
        return pb.ListKeysResponse(keys=[self._api_key(r) for r in records])

    async def RevokeKey(
        self,
        request: pb.RevokeKeyRequest,
        context: grpc.aio.ServicerContext[pb.RevokeKeyRequest, pb.ApiKey],
    ) -> pb.ApiKey:
        record = await self.orchestrator.keys.revoke(principal_of(request.caller), request.key_id)
        return self._api_key(record)

    async def ResolveKey(
        self,
        request: pb.ResolveKeyRequest,
        context: grpc.aio.ServicerContext[pb.ResolveKeyRequest, pb.ResolvedKey],
    ) -> pb.ResolvedKey:
        record = await self.orchestrator.keys.resolve(request.key)
        principal = record.principal
        return pb.ResolvedKey(
            key_id=record.key_id,
            principal_id=principal.id,
            tenant=principal.tenant,
            admin=principal.admin,
        )
