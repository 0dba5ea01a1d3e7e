"""Change notifications: subscriptions API, validation handshake, batches, lifecycle, controls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from graphsim import Simulator
from tests.graphsim.conftest import graph_client

MIME = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n"
    b"Content-Type: text/plain\r\n\r\nbody\r\n"
)


class Receiver:
    """A notification endpoint on loopback that records what Graph posts to it."""

    def __init__(self) -> None:
        self.validations: list[str] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.echo: Callable[[str], str] = lambda token: token
        self.status = 202
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    receiver.validations.append(token)
                    answer = receiver.echo(token).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                receiver.batches.append(json.loads(body)["value"])
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notes(self) -> list[dict[str, Any]]:
        return [n for batch in self.batches for n in batch]

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], seconds: float = 5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check(self.notes()):
                return
            time.sleep(0.02)
        raise AssertionError(f"not received in {seconds}s: {self.notes()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def graph(sim: Simulator) -> Iterator[httpx.Client]:
    with graph_client(sim) as c:
        yield c
    # Leave no subscription behind for the next test.
    with graph_client(sim) as c:
        for sub in c.get("/subscriptions").json()["value"]:
            c.delete(f"/subscriptions/{sub['id']}")
    with httpx.Client(base_url=sim.base_url, verify=sim.ssl_context()) as c:
        c.put("/_sim/notifications", json={"drop": 0, "delay_ms": 0})


def expiry(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def subscribe(graph: httpx.Client, resource: str, url: str, **extra: Any) -> httpx.Response:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": expiry(60),
        "clientState": "secret-123",
        **extra,
    }
    return graph.post("/subscriptions", json=body)


def test_create_validates_the_endpoint_then_notifies_new_mail(
    sim: Simulator, graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    resp = subscribe(graph, f"users/{user.id}/messages", receiver.url)
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert sub["clientState"] == "secret-123"
    assert sub["changeType"] == "created,updated,deleted"
    # The token arrives decoded and is Graph's sentence, spaces and all.
    assert len(receiver.validations) == 1
    assert receiver.validations[0].startswith("Validation: Testing client application")
    mid = sim.add_message(sim.tenant().id, user.id, MIME)
    receiver.wait_for(lambda notes: any(n.get("resourceData", {}).get("id") == mid for n in notes))
    note = next(n for n in receiver.notes() if n["resourceData"]["id"] == mid)
    assert note["subscriptionId"] == sub["id"]
    assert note["clientState"] == "secret-123"
    assert note["changeType"] == "created"
    assert note["tenantId"] == sim.tenant().id
    assert note["resource"] == f"Users/{user.id}/Messages/{mid}"
    assert note["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    assert note["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    # A deletion is notified as such; other users' mail is not.
    sim.delete_item(sim.tenant().id, mid, hard=True)
    receiver.wait_for(
        lambda notes: any(
            n["changeType"] == "deleted" and n["resourceData"]["id"] == mid for n in notes
        )
    )
    other = sorted(sim.tenant().users.values(), key=lambda u: u.upn)[1]
    before = len(receiver.notes())
    sim.add_message(sim.tenant().id, other.id, MIME)
    time.sleep(0.3)
    assert len(receiver.notes()) == before


def test_validation_failures_refuse_the_subscription(
    graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    receiver.echo = lambda token: "not the token"
    resp = subscribe(graph, f"users/{user.id}/messages", receiver.url)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "ValidationError"
    unreachable = subscribe(graph, f"users/{user.id}/messages", "http://127.0.0.1:9/nothing")
    assert unreachable.status_code == 400
    assert graph.get("/subscriptions").json()["value"] == []


@pytest.mark.parametrize(
    ("change", "resource", "code"),
    [
        ({"expirationDateTime": 10200}, "users/{u}/messages", "ExtensionError"),
        ({"expirationDateTime": -5}, "users/{u}/messages", "ExtensionError"),
        ({"changeType": "created"}, "users/{u}/drive/root", "InvalidRequest"),
        ({"clientState": "x" * 129}, "users/{u}/messages", "InvalidRequest"),
        ({"notificationUrl": "ftp://example.com/x"}, "users/{u}/messages", "InvalidRequest"),
        ({}, "users/{u}/nothing", "InvalidRequest"),
        ({}, "users/nobody@nowhere.example/messages", "Request_ResourceNotFound"),
    ],
)
def test_bad_subscription_requests_are_refused(
    graph: httpx.Client,
    receiver: Receiver,
    user: Any,
    change: dict[str, Any],
    resource: str,
    code: str,
) -> None:
    if isinstance(change.get("expirationDateTime"), int):  # minutes from now, at run time
        change = {"expirationDateTime": expiry(change["expirationDateTime"])}
    resp = subscribe(graph, resource.format(u=user.id), receiver.url, **change)
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()["error"]["code"] == code
    assert receiver.validations == []


def test_drive_notifications_renewal_and_delete(
    sim: Simulator, graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    # OneDrive allows almost 30 days and only "updated", on the root, without resource data.
    resp = subscribe(
        graph,
        f"users/{user.id}/drive/root",
        receiver.url,
        changeType="updated",
        expirationDateTime=expiry(42000),
    )
    assert resp.status_code == 201, resp.text
    sid = resp.json()["id"]
    sim.add_file(sim.tenant().id, "/notes/today.txt", user=user.id, data=b"hello")
    receiver.wait_for(lambda notes: any(n["subscriptionId"] == sid for n in notes))
    note = receiver.notes()[-1]
    assert note == {
        "subscriptionId": sid,
        "subscriptionExpirationDateTime": resp.json()["expirationDateTime"],
        "clientState": "secret-123",
        "tenantId": sim.tenant().id,
        "changeType": "updated",
        "resource": f"users/{user.id}/drive/root",
    }
    renewed = graph.patch(f"/subscriptions/{sid}", json={"expirationDateTime": expiry(600)})
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] != resp.json()["expirationDateTime"]
    too_far = graph.patch(f"/subscriptions/{sid}", json={"expirationDateTime": expiry(50000)})
    assert too_far.status_code == 400
    assert (
        graph.get(f"/subscriptions/{sid}").json()["expirationDateTime"]
        == (renewed.json()["expirationDateTime"])
    )
    assert graph.delete(f"/subscriptions/{sid}").status_code == 204
    assert graph.get(f"/subscriptions/{sid}").status_code == 404


def test_other_tenant_cannot_see_a_subscription(
    graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    resp = subscribe(graph, f"users/{user.id}/events", receiver.url)
    assert resp.status_code == 201
    sid = resp.json()["id"]
    with (
        Simulator(seed=8, users=1, messages=1, files=1, consented=True) as other_sim,
        graph_client(other_sim) as other,
    ):
        # Another tenant's list is empty and the id is unknown to it.
        assert other.get("/subscriptions").json()["value"] == []
        assert other.get(f"/subscriptions/{sid}").status_code == 404
    assert graph.get("/subscriptions", headers={"Authorization": "Bearer x"}).status_code == 401


def test_lifecycle_events_and_consent_removal(
    sim: Simulator, graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    resp = subscribe(
        graph, f"users/{user.id}/contacts", receiver.url, lifecycleNotificationUrl=receiver.url
    )
    assert resp.status_code == 201
    sid = resp.json()["id"]
    assert len(receiver.validations) == 1  # the same URL twice is validated once
    control = httpx.Client(base_url=sim.base_url, verify=sim.ssl_context())
    for event in ("reauthorizationRequired", "missed"):
        assert (
            control.post(f"/_sim/subscriptions/{sid}/lifecycle", json={"event": event}).status_code
            == 202
        )
    receiver.wait_for(
        lambda notes: (
            {n.get("lifecycleEvent") for n in notes} >= {"reauthorizationRequired", "missed"}
        )
    )
    assert all(n["clientState"] == "secret-123" for n in receiver.notes())
    assert graph.post(f"/subscriptions/{sid}/reauthorize").status_code == 204
    bad = control.post(f"/_sim/subscriptions/{sid}/lifecycle", json={"event": "nope"})
    assert bad.status_code == 400
    sim.revoke_consent(sim.tenant().id)
    try:
        receiver.wait_for(
            lambda notes: any(n.get("lifecycleEvent") == "subscriptionRemoved" for n in notes)
        )
        listed = control.get("/_sim/subscriptions").json()
        assert sid not in [s["id"] for s in listed]
    finally:
        sim.grant_consent(sim.tenant().id)
        control.close()


def test_drop_and_delay_switches(
    sim: Simulator, graph: httpx.Client, receiver: Receiver, user: Any
) -> None:
    control = httpx.Client(base_url=sim.base_url, verify=sim.ssl_context())
    assert subscribe(graph, f"users/{user.id}/messages", receiver.url).status_code == 201
    assert control.put("/_sim/notifications", json={"drop": 1}).json()["drop"] == 1
    dropped_before = control.get("/_sim/notifications").json()["dropped"]
    sim.add_message(sim.tenant().id, user.id, MIME)
    time.sleep(0.4)
    assert receiver.notes() == []
    assert control.get("/_sim/notifications").json()["dropped"] > dropped_before
    control.put("/_sim/notifications", json={"drop": 0, "delay_ms": 600})
    started = time.monotonic()
    sim.add_message(sim.tenant().id, user.id, MIME)
    receiver.wait_for(lambda notes: len(notes) == 1)
    assert time.monotonic() - started >= 0.6
    assert control.put("/_sim/notifications", json={"drop": 2}).status_code == 400
    control.close()


def test_mass_delete_control(sim: Simulator, user: Any) -> None:
    tenant = sim.tenant()
    control = httpx.Client(base_url=sim.base_url, verify=sim.ssl_context())
    drive = tenant.drives[user.drive_id]
    alive = sum(1 for i in drive.items.values() if not i.deleted and not i.is_folder)
    resp = control.post(f"/_sim/tenants/{tenant.id}/users/{user.upn}/massdelete", json={"count": 3})
    assert resp.status_code == 200
    assert len(resp.json()["items"]) == 3
    assert sum(1 for i in drive.items.values() if not i.deleted and not i.is_folder) == alive - 3
    mail = control.post(
        f"/_sim/tenants/{tenant.id}/users/{user.upn}/massdelete", json={"count": 2, "what": "mail"}
    )
    assert mail.status_code == 200 and len(mail.json()["items"]) == 2
    assert all(i not in tenant.items for i in mail.json()["items"])
    bad = control.post(
        f"/_sim/tenants/{tenant.id}/users/{user.upn}/massdelete", json={"what": "sites"}
    )
    assert bad.status_code == 400
    control.close()


def test_site_library_and_list_notifications(
    sim: Simulator, graph: httpx.Client, receiver: Receiver
) -> None:
    # A site's document library (its drive root) and a list: "updated" only, under 30 days.
    tenant = sim.tenant()
    site_id = sim.add_site(tenant.id, "Continuous Ops")
    site = sim.tenant().sites[site_id]
    drive_id = site.drive_ids[0]
    list_id = next(
        i for i in site.list_ids if sim.tenant().lists[i].display_name == "Issue tracker"
    )
    on_list, on_library = (
        subscribe(
            graph,
            resource,
            receiver.url,
            changeType="updated",
            clientState=state,
            expirationDateTime=expiry(42000),
        )
        for resource, state in (
            (f"sites/{site_id}/lists/{list_id}", "list-state"),
            (f"drives/{drive_id}/root", "library-state"),
        )
    )
    assert on_list.status_code == 201, on_list.text
    assert on_library.status_code == 201, on_library.text
    list_sid, library_sid = on_list.json()["id"], on_library.json()["id"]

    item = sim.add_list_item(tenant.id, list_id, {"Title": "Broken build", "Status": "open"})
    receiver.wait_for(lambda notes: any(n["subscriptionId"] == list_sid for n in notes))
    note = next(n for n in receiver.notes() if n["subscriptionId"] == list_sid)
    assert note["clientState"] == "list-state"
    assert note["changeType"] == "updated"
    assert note["resource"] == f"sites/{site_id}/lists/{list_id}"
    assert not any(n["subscriptionId"] == library_sid for n in receiver.notes())

    sim.add_file(tenant.id, "/plans/q1.txt", drive_id=drive_id, data=b"plan")
    receiver.wait_for(lambda notes: any(n["subscriptionId"] == library_sid for n in notes))
    note = next(n for n in receiver.notes() if n["subscriptionId"] == library_sid)
    assert note["clientState"] == "library-state"
    assert note["resource"] == f"drives/{drive_id}/root"

    # An edit of an existing list item is notified too.
    before = sum(n["subscriptionId"] == list_sid for n in receiver.notes())
    sim.edit_item(tenant.id, item, {"Status": "fixed"}, list_id=list_id)
    receiver.wait_for(lambda notes: sum(n["subscriptionId"] == list_sid for n in notes) > before)


@pytest.mark.parametrize(
    ("resource", "change", "status", "code"),
    [
        ("sites/{s}/lists/{l}", {"changeType": "created"}, 400, "InvalidRequest"),
        ("sites/{s}/lists/{l}", {"expirationDateTime": 43000}, 400, "ExtensionError"),
        ("sites/{s}/lists/no-such-list", {"changeType": "updated"}, 404, "itemNotFound"),
        ("sites/no-such-site/lists/{l}", {"changeType": "updated"}, 404, "itemNotFound"),
    ],
)
def test_bad_list_subscriptions_are_refused(
    sim: Simulator,
    graph: httpx.Client,
    receiver: Receiver,
    resource: str,
    change: dict[str, Any],
    status: int,
    code: str,
) -> None:
    site_id = next(s.id for s in sim.tenant().sites.values() if s.list_ids)
    list_id = sim.tenant().sites[site_id].list_ids[0]
    if isinstance(change.get("expirationDateTime"), int):
        change = {
            "changeType": "updated",
            "expirationDateTime": expiry(change["expirationDateTime"]),
        }
    resp = subscribe(graph, resource.format(s=site_id, l=list_id), receiver.url, **change)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert receiver.validations == []
