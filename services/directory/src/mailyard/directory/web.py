"""The directory's HTTP admin API, beside gRPC: each route calls the gRPC servicer method
the CLI's command calls (one code path, one set of checks); OpenAPI at /docs.

    GET    /api/domains                   POST   /api/domains {name, alias_of}
    DELETE /api/domains/{name}?with_aliases=  PUT /api/domains/{name}/catchall {action, target}
    GET    /api/users?domain=             POST   /api/users {address, password, ...}
    DELETE /api/users/{address}           PUT    /api/users/{address}/password|quota|gecos
    PUT    /api/users/{address}/forward   DELETE /api/users/{address}/forward
    GET    /api/users/{address}/vacation  PUT    /api/users/{address}/vacation
                                          {subject, body, start, end, enabled}
    DELETE /api/users/{address}/vacation
    GET    /api/aliases?domain=           POST   /api/aliases {address, targets}
    DELETE /api/aliases/{address}
    GET    /api/lists?domain=             GET    /api/lists/{address}   (with members)
    POST   /api/lists {address, owner, members, posting, posters, subscription}
    DELETE /api/lists/{address}           PUT    /api/lists/{address}/posting {posting, posters}
    PUT    /api/lists/{address}/subscription {subscription: closed|confirm}
    POST   /api/lists/{address}/members {member}
    DELETE /api/lists/{address}/members/{member}
    GET    /api/resolve/{address}
    GET    /api/settings                  PUT    /api/settings/recipient_delimiter {value}
    GET    /api/control                   GET    /api/control/{name}
    PUT    /api/control/{name} {text}     DELETE /api/control/{name}

The four listings come in pages: ?limit= (0 or none: 1,000, at most 1,000) and ?page_token=;
each answer holds next_page_token and "next", the path of the next page (null after the
last). GET needs role read (or admin), every other method admin (mailyard.core.http). Refusals
come back as {"detail": "..."}: 400 bad value, 404 absent, 409 exists / precondition; a body
that is not the documented JSON (unknown field, wrong type) is FastAPI's 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from mailyard.api.control.v1 import control_pb2 as cpb
from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core.http import Limit, PageToken, http_context, to_json, to_json_page
from mailyard.directory.control_service import ControlService
from mailyard.directory.directory_service import DirectoryService

Text = Field(default="", max_length=1024)
Addresses = Field(min_length=1, max_length=10_000)
Count = Field(default=0, ge=0, lt=2**64)
_ACTIONS = {"deliver": pb.CATCH_ALL_ACTION_DELIVER, "bounce": pb.CATCH_ALL_ACTION_BOUNCE,
            "delete": pb.CATCH_ALL_ACTION_DELETE, "none": pb.CATCH_ALL_ACTION_UNSPECIFIED}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422, not ignored


class NewDomain(_Body):
    name: str = Field(max_length=255)
    alias_of: str = Field(default="", max_length=255)  # an alias domain of this real one


class CatchAll(_Body):
    action: Literal["deliver", "bounce", "delete", "none"]
    target: str = Text


class Password(_Body):
    password: str = Text
    password_hash: str = Text
    cram_md5: bool = False


class NewUser(Password):
    address: str = Field(max_length=1024)
    quota_bytes: int = Count
    quota_messages: int = Count
    gecos: str = Text


class Quota(_Body):
    bytes: int = Count
    messages: int = Count


class Gecos(_Body):
    gecos: str = Field(max_length=1024)


class Forward(_Body):
    targets: list[str] = Addresses
    keep_copy: bool = False


class Vacation(_Body):
    subject: str = Text
    body: str = Field(max_length=100_000)  # the directory's own limit is 64 KiB of UTF-8
    start: datetime | None = None          # ISO 8601; without a zone: UTC
    end: datetime | None = None
    enabled: bool = True

    def message(self) -> pb.Autoresponse:
        auto = pb.Autoresponse(enabled=self.enabled, subject=self.subject, body=self.body)
        if self.start is not None:
            auto.start.FromDatetime(self.start)
        if self.end is not None:
            auto.end.FromDatetime(self.end)
        return auto


class NewAlias(_Body):
    address: str = Field(max_length=1024)
    targets: list[str] = Addresses


Posting = Literal["open", "members", "announce"]
_POSTING = {"open": pb.POSTING_POLICY_OPEN, "members": pb.POSTING_POLICY_MEMBERS,
            "announce": pb.POSTING_POLICY_ANNOUNCE}


class ListPosting(_Body):
    posting: Posting = "open"
    posters: list[str] = Field(default_factory=list, max_length=10_000)


Subscription = Literal["closed", "confirm"]
_SUBSCRIPTION = {"closed": pb.SUBSCRIPTION_POLICY_CLOSED,
                 "confirm": pb.SUBSCRIPTION_POLICY_CONFIRM}


class ListSubscription(_Body):
    subscription: Subscription


class NewList(ListPosting):
    address: str = Field(max_length=1024)
    owner: str = Field(max_length=1024)
    members: list[str] = Field(default_factory=list, max_length=100_000)
    subscription: Subscription = "closed"


class Member(_Body):
    member: str = Field(max_length=1024)


class Delimiter(_Body):
    value: str = Field(max_length=64)    # "" = off


class ControlText(_Body):
    text: str = Field(max_length=1_000_000)


def mount(app: FastAPI, directory: DirectoryService, control: ControlService) -> None:
    ctx = http_context
    d = directory

    # -- domains ---------------------------------------------------------------------------
    @app.get("/api/domains")
    async def list_domains(request: Request, limit: Limit = 0, page_token: PageToken = ""
                           ) -> dict[str, Any]:
        return to_json_page(await d.ListDomains(pb.ListDomainsRequest(
            page_size=limit, page_token=page_token), ctx()), request)

    @app.post("/api/domains", status_code=201)
    async def add_domain(body: NewDomain) -> dict[str, Any]:
        return to_json(await d.AddDomain(pb.AddDomainRequest(name=body.name,
                                                             alias_of=body.alias_of), ctx()))

    @app.delete("/api/domains/{name}")
    async def delete_domain(name: str, with_aliases: bool = False) -> dict[str, Any]:
        return to_json(await d.DeleteDomain(pb.DeleteDomainRequest(
            name=name, with_aliases=with_aliases), ctx()))

    @app.put("/api/domains/{name}/catchall")
    async def set_catch_all(name: str, body: CatchAll) -> dict[str, Any]:
        return to_json(await d.SetCatchAll(pb.SetCatchAllRequest(
            domain=name, action=_ACTIONS[body.action], target=body.target), ctx()))

    # -- users (mailboxes) -----------------------------------------------------------------
    @app.get("/api/users")
    async def list_users(request: Request, domain: str = "", limit: Limit = 0,
                   page_token: PageToken = "") -> dict[str, Any]:
        return to_json_page(await d.ListMailboxes(pb.ListMailboxesRequest(
            domain=domain, page_size=limit, page_token=page_token), ctx()), request)

    @app.post("/api/users", status_code=201)
    async def add_user(body: NewUser) -> dict[str, Any]:
        return to_json(await d.AddMailbox(pb.AddMailboxRequest(
            address=body.address, password=body.password, password_hash=body.password_hash,
            enable_cram_md5=body.cram_md5, quota_bytes=body.quota_bytes,
            quota_messages=body.quota_messages, gecos=body.gecos), ctx()))

    @app.delete("/api/users/{address}")
    async def delete_user(address: str) -> dict[str, Any]:
        return to_json(await d.DeleteMailbox(pb.AddressRequest(address=address), ctx()))

    @app.put("/api/users/{address}/password")
    async def set_password(address: str, body: Password) -> dict[str, Any]:
        return to_json(await d.SetPassword(pb.SetPasswordRequest(
            address=address, password=body.password, password_hash=body.password_hash,
            enable_cram_md5=body.cram_md5), ctx()))

    @app.put("/api/users/{address}/quota")
    async def set_quota(address: str, body: Quota) -> dict[str, Any]:
        return to_json(await d.SetQuota(pb.SetQuotaRequest(
            address=address, quota_bytes=body.bytes, quota_messages=body.messages), ctx()))

    @app.put("/api/users/{address}/gecos")
    async def set_gecos(address: str, body: Gecos) -> dict[str, Any]:
        return to_json(await d.SetGecos(pb.SetGecosRequest(address=address, gecos=body.gecos),
                                        ctx()))

    @app.put("/api/users/{address}/forward")
    async def set_forward(address: str, body: Forward) -> dict[str, Any]:
        return to_json(await d.SetForward(pb.SetForwardRequest(
            address=address, targets=body.targets, keep_copy=body.keep_copy), ctx()))

    @app.delete("/api/users/{address}/forward")
    async def clear_forward(address: str) -> dict[str, Any]:
        return to_json(await d.ClearForward(pb.AddressRequest(address=address), ctx()))

    @app.get("/api/users/{address}/vacation")
    async def get_vacation(address: str) -> dict[str, Any]:
        return to_json(await d.GetAutoresponse(pb.AddressRequest(address=address), ctx()))

    @app.put("/api/users/{address}/vacation")
    async def set_vacation(address: str, body: Vacation) -> dict[str, Any]:
        return to_json(await d.SetAutoresponse(pb.SetAutoresponseRequest(
            address=address, autoresponse=body.message()), ctx()))

    @app.delete("/api/users/{address}/vacation")
    async def clear_vacation(address: str) -> dict[str, Any]:
        return to_json(await d.ClearAutoresponse(pb.AddressRequest(address=address), ctx()))

    # -- aliases ---------------------------------------------------------------------------
    @app.get("/api/aliases")
    async def list_aliases(request: Request, domain: str = "", limit: Limit = 0,
                   page_token: PageToken = "") -> dict[str, Any]:
        return to_json_page(await d.ListAliases(pb.ListAliasesRequest(
            domain=domain, page_size=limit, page_token=page_token), ctx()), request)

    @app.post("/api/aliases", status_code=201)
    async def add_alias(body: NewAlias) -> dict[str, Any]:
        return to_json(await d.AddAlias(pb.AddAliasRequest(address=body.address,
                                                           targets=body.targets), ctx()))

    @app.delete("/api/aliases/{address}")
    async def delete_alias(address: str) -> dict[str, Any]:
        return to_json(await d.DeleteAlias(pb.AddressRequest(address=address), ctx()))

    # -- mailing lists ---------------------------------------------------------------------
    @app.get("/api/lists")
    async def list_lists(request: Request, domain: str = "", limit: Limit = 0,
                   page_token: PageToken = "") -> dict[str, Any]:
        return to_json_page(await d.ListLists(pb.ListListsRequest(
            domain=domain, page_size=limit, page_token=page_token), ctx()), request)

    @app.get("/api/lists/{address}")
    async def get_list(address: str) -> dict[str, Any]:
        return to_json(await d.GetList(pb.AddressRequest(address=address), ctx()))

    @app.post("/api/lists", status_code=201)
    async def add_list(body: NewList) -> dict[str, Any]:
        return to_json(await d.AddList(pb.AddListRequest(
            address=body.address, owner=body.owner, members=body.members,
            posting=_POSTING[body.posting], posters=body.posters,
            subscription=_SUBSCRIPTION[body.subscription]), ctx()))

    @app.put("/api/lists/{address}/posting")
    async def set_posting(address: str, body: ListPosting) -> dict[str, Any]:
        return to_json(await d.SetListPosting(pb.SetListPostingRequest(
            address=address, posting=_POSTING[body.posting], posters=body.posters), ctx()))

    @app.put("/api/lists/{address}/subscription")
    async def set_subscription(address: str, body: ListSubscription) -> dict[str, Any]:
        return to_json(await d.SetListSubscription(pb.SetListSubscriptionRequest(
            address=address, subscription=_SUBSCRIPTION[body.subscription]), ctx()))

    @app.delete("/api/lists/{address}")
    async def delete_list(address: str) -> dict[str, Any]:
        return to_json(await d.DeleteList(pb.AddressRequest(address=address), ctx()))

    @app.post("/api/lists/{address}/members")
    async def add_member(address: str, body: Member) -> dict[str, Any]:
        return to_json(await d.AddListMember(pb.ListMemberRequest(list=address,
                                                                  member=body.member), ctx()))

    @app.delete("/api/lists/{address}/members/{member}")
    async def delete_member(address: str, member: str) -> dict[str, Any]:
        return to_json(await d.DeleteListMember(pb.ListMemberRequest(list=address,
                                                                     member=member), ctx()))

    @app.get("/api/resolve/{address}")
    async def resolve(address: str) -> dict[str, Any]:
        return to_json(await d.Resolve(pb.AddressRequest(address=address), ctx()))

    # -- directory-wide settings -----------------------------------------------------------
    @app.get("/api/settings")
    async def get_settings() -> dict[str, Any]:
        return to_json(await d.GetSettings(pb.GetSettingsRequest(), ctx()))

    @app.put("/api/settings/recipient_delimiter")
    async def set_recipient_delimiter(body: Delimiter) -> dict[str, Any]:
        return to_json(await d.SetRecipientDelimiter(pb.SetRecipientDelimiterRequest(
            recipient_delimiter=body.value), ctx()))

    # -- control files ---------------------------------------------------------------------
    @app.get("/api/control")
    async def list_control() -> dict[str, Any]:
        return to_json(await control.List(cpb.ListRequest(), ctx()))

    @app.get("/api/control/{name}")
    async def get_control(name: str) -> dict[str, Any]:
        return to_json(await control.Get(cpb.GetRequest(name=name), ctx()))

    @app.put("/api/control/{name}")
    async def set_control(name: str, body: ControlText) -> dict[str, Any]:
        return to_json(await control.Set(cpb.SetRequest(name=name, text=body.text), ctx()))

    @app.delete("/api/control/{name}")
    async def delete_control(name: str) -> dict[str, Any]:
        return to_json(await control.Delete(cpb.GetRequest(name=name), ctx()))
