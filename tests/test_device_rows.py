"""The device-row work of LOGINs and session ends (issue 12, gap 6), counted in memory: a
LOGIN that changes nothing of its device writes nothing, the records of one event-loop turn
are written at its end and once per device (an end and a new LOGIN of the device in one turn
are one write), and what ``device/list`` shows is still every change. The device limit is
still enforced with its O(1) check (a user with many devices online no longer makes each
LOGIN copy all of their sessions)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from privchat_tcp.config import Settings
from privchat_tcp.errors import ErrorCode, ServiceError
from privchat_tcp.harness import Harness
from privchat_tcp.proto import privchat_pb2 as pb
from privchat_tcp.service.model import DeviceRecord
from privchat_tcp.store.memory import MemoryStore
from privchat_tcp.wire.commands import Cmd


class CountingStore(MemoryStore):
    """The memory store, counting the device records written."""

    def __init__(self) -> None:
        super().__init__()
        self.device_writes = 0

    def put_device(self, device: DeviceRecord) -> None:
        self.device_writes += 1
        super().put_device(device)


def _harness(**settings: object) -> tuple[Harness, CountingStore]:
    """A harness whose clock moves one millisecond at each reading (no two events share a
    time, so an end always changes the last active time)."""
    store = CountingStore()
    ticks = itertools.count(1_800_000_000_000)
    settings_ = Settings(jwt_secret="harness-secret-" + "0" * 32, **settings)  # type: ignore[arg-type]
    return Harness(settings_, store, clock=lambda: next(ticks)), store


def _login_frame(token: str, device_id: str) -> bytes:
    return pb.AuthorizationRequest(
        auth_type="JWT",
        auth_token=token,
        device_info=pb.DeviceInfo(device_id=device_id, device_type="harness"),
    ).SerializeToString()


def test_writes_are_per_change_and_per_turn() -> None:
    h, store = _harness()
    alice = h.user("alice")
    device_id = str(uuid.uuid4())
    token, _, _ = h.core.services.accounts.issue(alice.user_id, device_id)
    first = h.device()
    first.request(Cmd.LOGIN, _login_frame(token, device_id))
    assert store.device_writes == 1  # a new device: its record, at the end of the turn
    [row] = first.rpc("device/list", {})["devices"]
    assert row["device_id"] == device_id and row["device_type"] == "harness"

    # the session ends: its last active time, once
    first.session.close()
    first.transmit()
    h.turn()
    assert store.device_writes == 2
    ended = h.core.services.devices.device(alice.user_id, device_id).last_active

    # a LOGIN of the device with the same login (token) that changes nothing: no write
    second = h.device()
    second.request(Cmd.LOGIN, _login_frame(token, device_id))
    assert store.device_writes == 2

    # an end and a LOGIN of the device in the same turn: one write for both
    second.session.close()
    second.transmit()
    third = h.device()
    frame = _login_frame(token, device_id)
    seq = third.client.send_request(Cmd.LOGIN, frame, 0)
    third.feed([(seq, Cmd.LOGIN, 0, 0, frame)])
    assert store.device_writes == 2  # nothing yet: the turn has not ended
    h.turn()
    assert store.device_writes == 3
    record = h.core.services.devices.device(alice.user_id, device_id)
    assert record.last_active > ended and len(record.login_ids) == 1


def test_printable_fields_are_kept_and_others_cleaned() -> None:
    h, _ = _harness()
    services = h.core.services
    bob = h.user("bob")
    services.devices.connected(
        bob.user_id,
        "d1",
        {"device_type": "linux", "device_name": "bob's\x00 phone\n" + "x" * 80},
        "127.0.0.1:1",
        "lid-1",
    )
    record = services.devices.device(bob.user_id, "d1")
    assert record.device_type == "linux"
    assert record.device_name == ("bob's phone" + "x" * 80)[: 64 - 2]  # cut, then cleaned
    assert record.device_name.isprintable()


@pytest.mark.parametrize("limit", [1, 2])
def test_the_device_limit_counts_other_devices_only(limit: int) -> None:
    h, _ = _harness(max_devices_per_user=limit)
    carol = h.user("carol")
    ids = [str(uuid.uuid4()) for _ in range(limit)]
    for device_id in ids:
        h.login(carol, device_id)
    with pytest.raises(ServiceError) as refused:
        h.login(carol, str(uuid.uuid4()))
    assert refused.value.code == ErrorCode.DEVICE_LIMIT_EXCEEDED
    h.login(carol, ids[0])  # a device already online logs in again: not one more
