"""gRPC mailyard.control.v1.Control: qmail's control/ directory, kept in the KV bucket
"control" as the files' text. Every service watches the bucket (ControlView), so a Set
applies to the next connection or delivery without a restart.
"""

from __future__ import annotations

import logging

import grpc

from mailyard.api.control.v1 import control_pb2 as pb
from mailyard.api.control.v1 import control_pb2_grpc as pb_grpc
from mailyard.core import control
from mailyard.core.control import ControlView
from mailyard.directory import validate
from mailyard.directory.errors import not_found, rpc
from mailyard.directory.metrics import changed
from mailyard.directory.store import Current, KVStore, ViewSync

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext


def control_file(current: Current, text: str | None = None) -> pb.ControlFile:
    if text is None:
        text = (current.value or b"").decode(errors="replace")
    out = pb.ControlFile(name=current.key, text=text, version=control.version_of(text),
                         size=len(text.encode()))
    if current.updated_at is not None:
        out.updated_at.FromDatetime(current.updated_at)
    return out


class ControlService(pb_grpc.ControlServicer):
    def __init__(self, store: KVStore, view: ControlView) -> None:
        self.store = store
        self.view = view
        self.sync = ViewSync(view)

    @rpc
    async def Get(self, request: pb.GetRequest, context: Ctx) -> pb.ControlFile:
        name = validate.control_name(request.name)
        current = await self.store.get(name)
        if current.value is None:
            raise not_found(f"control/{name} is not set (services use their default)")
        return control_file(current)

    @rpc
    async def Set(self, request: pb.SetRequest, context: Ctx) -> pb.ControlFile:
        name = validate.known_control_name(request.name)
        text = validate.control_text(name, request.text)
        # Last writer wins, as with `echo ... > control/x`; the CAS only keeps the write whole.
        _, revision = await self.store.change(name, lambda _raw: text.encode())
        if revision:
            changed("control")
            await self.sync.wait(revision)
            log.info("control file set",
                     extra={"file": name, "version": control.version_of(text)})
        return control_file(await self.store.get(name))

    @rpc
    async def Delete(self, request: pb.GetRequest, context: Ctx) -> pb.ControlFile:
        name = validate.control_name(request.name)

        def mutate(raw: bytes | None) -> None:
            if raw is None:
                raise not_found(f"control/{name} is not set")

        before, revision = await self.store.change(name, mutate)
        changed("control")
        await self.sync.wait(revision)
        log.info("control file deleted", extra={"file": name})
        return control_file(before)

    @rpc
    async def List(self, request: pb.ListRequest, context: Ctx) -> pb.ListResponse:
        files = []
        for name in sorted(self.view.data):
            current = await self.store.get(name)
            if current.value is not None:
                # no text: the files together may pass gRPC's 4 MiB (each is up to 1 MiB)
                file = control_file(current)
                file.ClearField("text")
                files.append(file)
        return pb.ListResponse(files=files)
