"""Subscribing to a list by mail, the directory's side: the list's subscription setting and
ConfirmListMember, which changes a membership only for a cookie it checks itself."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import auth, listcookie
from mailyard.core.srs_keys import list_cookie_secrets

from .conftest import code_of

LIST = "news@example.com"


async def _confirm(stub: Any, member: str, cookie: str, subscribe: bool = True) -> Any:
    return await stub.ConfirmListMember(pb.ConfirmListMemberRequest(
        list=LIST, member=member, subscribe=subscribe, cookie=cookie))


async def test_a_lists_subscription_is_closed_until_set_to_confirm(example: Any) -> None:
    """No list could take subscriptions by mail: there was no setting to say so."""
    mlist = await example.AddList(pb.AddListRequest(address=LIST, owner="o@example.com"))
    assert mlist.subscription == pb.SUBSCRIPTION_POLICY_UNSPECIFIED
    mlist = await example.SetListSubscription(pb.SetListSubscriptionRequest(
        address="News@example.com", subscription=pb.SUBSCRIPTION_POLICY_CONFIRM))
    assert mlist.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM
    got = await example.GetList(pb.AddressRequest(address=LIST))
    assert got.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM
    made = await example.AddList(pb.AddListRequest(
        address="ads@example.com", owner="o@example.com",
        subscription=pb.SUBSCRIPTION_POLICY_CONFIRM))
    assert made.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await example.SetListSubscription(pb.SetListSubscriptionRequest(
            address=LIST, subscription=9))  # type: ignore[arg-type]
    assert code_of(err) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await example.SetListSubscription(pb.SetListSubscriptionRequest(
            address="none@example.com", subscription=pb.SUBSCRIPTION_POLICY_CONFIRM))
    assert code_of(err) == grpc.StatusCode.NOT_FOUND


async def test_a_confirmation_changes_a_membership_only_with_its_own_cookie(
        example: Any, js: Any) -> None:
    """A valid cookie for (list, action, address) joins or leaves, once; a forged one, one
    made for another address or action, or one older than ten days changes nothing."""
    await example.AddList(pb.AddListRequest(address=LIST, owner="o@example.com",
                                            members=["Ann@remote.test"],
                                            subscription=pb.SUBSCRIPTION_POLICY_CONFIRM))
    [secret] = await list_cookie_secrets(js).get()
    now = time.time()
    joe = "joe@remote.test"
    good = listcookie.make(secret, LIST, listcookie.SUBSCRIBE, joe, now)
    stamp, _, mac = good.partition(".")
    refused = [
        (joe, f"{stamp}.{'0' * len(mac)}", True),                               # forged
        ("eve@remote.test", good, True),                                       # other one
        (joe, good, False),                                                    # to leave
        (joe, listcookie.make(secret, "ads@example.com", listcookie.SUBSCRIBE, joe, now),
         True),                                                                # other list
        (joe, listcookie.make(b"x" * 32, LIST, listcookie.SUBSCRIBE, joe, now), True),
        (joe, listcookie.make(secret, LIST, listcookie.SUBSCRIBE, joe,
                              now - 11 * 86400), True),                        # expired
        (joe, "", True),
    ]
    for member, cookie, subscribe in refused:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _confirm(example, member, cookie, subscribe)
        assert code_of(err) == grpc.StatusCode.PERMISSION_DENIED, (member, cookie)
        assert "invalid or expired" in (err.value.details() or "")
    assert list((await example.GetList(pb.AddressRequest(address=LIST))).members) == [
        "Ann@remote.test"]

    assert (await _confirm(example, joe, good)).changed
    assert not (await _confirm(example, joe, good)).changed  # a second reply: no-op
    leave = listcookie.make(secret, LIST, listcookie.UNSUBSCRIBE, "ann@remote.test", now)
    assert (await _confirm(example, "ann@remote.test", leave, subscribe=False)).changed
    assert list((await example.GetList(pb.AddressRequest(address=LIST))).members) == [joe]


async def test_a_subscriber_at_a_utf8_domain_can_confirm(example: Any, js: Any) -> None:
    """The cookie was checked against the member in its A-label form, while local-delivery
    made it for the address as the confirmation address carries it (ann@bücher.example):
    every subscriber at an internationalised domain was told the confirmation was
    invalid."""
    await example.AddList(pb.AddListRequest(address=LIST, owner="o@example.com",
                                            subscription=pb.SUBSCRIPTION_POLICY_CONFIRM))
    [secret] = await list_cookie_secrets(js).get()
    ann = "ann@bücher.example"
    cookie = listcookie.make(secret, LIST, listcookie.SUBSCRIBE, ann, time.time())
    assert (await _confirm(example, ann, cookie)).changed
    assert list((await example.GetList(pb.AddressRequest(address=LIST))).members) == [
        "ann@xn--bcher-kva.example"]


async def test_a_closed_list_takes_no_confirmation(example: Any, js: Any) -> None:
    await example.AddList(pb.AddListRequest(address=LIST, owner="o@example.com"))
    [secret] = await list_cookie_secrets(js).get()
    cookie = listcookie.make(secret, LIST, listcookie.SUBSCRIBE, "joe@remote.test",
                             time.time())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _confirm(example, "joe@remote.test", cookie)
    assert code_of(err) == grpc.StatusCode.FAILED_PRECONDITION
    assert not (await example.GetList(pb.AddressRequest(address=LIST))).members


def test_the_listmail_role_may_confirm_and_nothing_else() -> None:
    """local-delivery's token: ConfirmListMember (the cookie checked by the directory), not
    AddListMember or any other write; no other role may confirm."""
    token = "t" * 40
    tokens = auth.Tokens(auth.parse_table(f"listmail {token}\nadmin {'a' * 40}"))
    base = "/mailyard.directory.v1.Directory/"
    assert tokens.check(f"Bearer {token}", base + "ConfirmListMember") is None
    for method in ("AddListMember", "DeleteListMember", "SetListSubscription", "GetList",
                   "Resolve"):
        refusal = tokens.check(f"Bearer {token}", base + method)
        assert refusal is not None and refusal[0] == grpc.StatusCode.PERMISSION_DENIED
    refusal = tokens.check(f"Bearer {'a' * 40}", base + "ConfirmListMember")
    assert refusal is not None and refusal[0] == grpc.StatusCode.PERMISSION_DENIED
