"""The route table as a value: every served route is a PrivChat route (or ``system/*``), each
declares the keys it reads, and anonymous routes are exactly the ones the reference allows."""

from __future__ import annotations

from conftest import ServerThread, run, user

from privchat_tcp.errors import ErrorCode, ServiceError, Status
from privchat_tcp.rpc import catalog
from privchat_tcp.rpc.routes import all_routes


def test_served_routes_are_privchat_routes_with_declared_keys() -> None:
    table = all_routes()
    names = set(table.names())
    assert names <= catalog.ALL, names - catalog.ALL
    for route in table:
        assert route.keys is not None, route.name
        assert route.anonymous == (route.name in catalog.ANONYMOUS), route.name


def test_the_catalog_holds_91_privchat_routes() -> None:
    assert len(catalog.ALL - {"system/health", "system/info"}) == 91


def test_an_unknown_key_is_refused_by_name_before_anything_happens(server: ServerThread) -> None:
    async def main() -> None:
        alice = await user(server.port, "alice")
        bob = await user(server.port, "bob")
        try:
            await alice.rpc("group/group/create", {"name": "g", "members": [bob.user_id]})
        except ServiceError as exc:
            assert exc.status == Status.BAD_REQUEST and exc.code == ErrorCode.INVALID_PARAMS
            assert "members" in str(exc)
        else:
            raise AssertionError("an unknown key was accepted")
        # nothing was created: the next group gets the first group id a new store gives
        g = await alice.rpc("group/group/create", {"name": "g", "member_ids": [bob.user_id]})
        assert g["member_count"] == 2
        weird = "\u00e9" * 100
        try:
            await alice.rpc("group/group/create", {"name": "g", weird: 1})
        except ServiceError as exc:
            assert weird not in str(exc)  # raw input is never echoed
        else:
            raise AssertionError("an unknown key was accepted")
        await alice.close()
        await bob.close()

    run(main())


def test_every_privchat_route_is_served() -> None:
    """The 91 routes of reference section 6 and the server's ``system/*`` are all in the table."""
    assert set(all_routes().names()) == catalog.ALL


def test_every_route_is_called_by_an_over_tcp_test() -> None:
    """Each route's name appears in a test module that talks to a real server (the over-TCP
    tests are each route's definition of done); the generated tables and the in-memory rule
    matrices do not count."""
    import pathlib

    not_tcp = {
        "test_fuzz.py",
        "test_hostile_input.py",
        "test_malformed_table.py",
        "test_rpc_table.py",
        "test_rules.py",
        "test_message_rules.py",
    }
    here = pathlib.Path(__file__).parent
    source = "".join(
        p.read_text(encoding="utf-8") for p in here.glob("test_*.py") if p.name not in not_tcp
    )
    missing = sorted(r for r in catalog.ALL if f'"{r}"' not in source)
    assert not missing, missing
