"""The surface around the handlers: function-call segments, beta, JSON errors for every
unknown path, time zones, and counters that count each wire request once by kind."""

from __future__ import annotations

from typing import Any

import httpx

from graphsim import Simulator


def test_function_call_segments_are_their_bare_names(client: httpx.Client, user: Any) -> None:
    plain = client.get("/sites/getAllSites").json()
    called = client.get("/sites/getAllSites()").json()
    assert [s["id"] for s in called["value"]] == [s["id"] for s in plain["value"]]
    qualified = client.get(f"/users/{user.id}/mailFolders/microsoft.graph.delta()")
    assert qualified.status_code == 200, qualified.text
    assert "/mailFolders/delta()?" in (
        qualified.json().get("@odata.deltaLink") or qualified.json()["@odata.nextLink"]
    )
    # A file named like a call keeps its name inside a path address.
    drive = client.get(f"/users/{user.id}/drive").json()["id"]
    put = client.put(f"/drives/{drive}/root:/odd/name():/content", content=b"x")
    assert put.status_code == 201 and put.json()["name"] == "name()"


def test_unknown_paths_answer_json_naming_the_first_unknown_segment(
    sim: Simulator, client: httpx.Client, user: Any
) -> None:
    for path, segment in (
        (f"/users/{user.id}/mailFolders/inbox/nothing/more", "nothing"),
        (f"/users/{user.id}/nothing", "nothing"),
        ("/nothing", "nothing"),
    ):
        for base in (sim.graph_url, f"{sim.base_url}/beta"):
            answer = client.get(base + path)
            assert answer.status_code == 400, (base, path)
            error = answer.json()["error"]
            assert error["code"] == "BadRequest"
            assert error["message"] == f"Resource not found for the segment '{segment}'."
            assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    # Beta's own paths are not v1.0 paths.
    beta_only = client.get(f"/users/{user.id}/calendars/calendar/events/delta")
    assert beta_only.status_code == 400
    assert beta_only.json()["error"]["message"] == "Resource not found for the segment 'delta'."
    nested = client.get(f"/beta/users/{user.id}/mailFolders")
    assert nested.json()["error"]["message"] == "Resource not found for the segment 'beta'."
    version = client.get(f"{sim.base_url}/v3.0/users")
    assert version.status_code == 400
    assert version.json()["error"]["message"] == "Invalid version: v3.0"
    options = client.request("OPTIONS", f"{sim.graph_url}/users")
    assert options.status_code == 405 and options.json()["error"]["code"]
    entra = client.get(f"{sim.base_url}/common/oauth2/v2.0/nothing")
    assert entra.status_code == 404 and entra.json()["error"] == "invalid_request"
    assert {"error_description", "trace_id", "correlation_id"} <= set(entra.json())


def test_beta_batch_and_time_zones(sim: Simulator, client: httpx.Client, user: Any) -> None:
    answer = client.post(
        f"{sim.base_url}/beta/$batch",
        json={
            "requests": [
                {"id": "1", "method": "GET", "url": f"/users/{user.id}/mailFolders?$top=2"},
                {
                    "id": "2",
                    "method": "GET",
                    "url": f"/users/{user.id}/calendarView"
                    "?startDateTime=2000-01-01T00:00:00Z&endDateTime=2040-01-01T00:00:00Z",
                    "headers": {"Prefer": 'outlook.timezone="Tokyo Standard Time"'},
                },
            ]
        },
    )
    assert answer.status_code == 200
    by_id = {r["id"]: r for r in answer.json()["responses"]}
    folders = by_id["1"]["body"]
    assert folders["@odata.nextLink"].startswith(f"{sim.base_url}/beta/users/")
    view = by_id["2"]["body"]["value"]
    assert view and all(e["start"]["timeZone"] == "Tokyo Standard Time" for e in view)
    assert by_id["2"]["headers"]["Preference-Applied"] == 'outlook.timezone="Tokyo Standard Time"'


def test_counters_by_kind_with_uploads(sim: Simulator, client: httpx.Client, user: Any) -> None:
    drive = client.get(f"/users/{user.id}/drive").json()["id"]
    session = client.post(f"/drives/{drive}/root:/counted.bin:/createUploadSession", json={})
    assert session.status_code == 200
    sim.reset_counters()
    with httpx.Client(verify=sim.ssl_context()) as plain:
        done = plain.put(
            session.json()["uploadUrl"],
            content=b"12345",
            headers={"Content-Range": "bytes 0-4/5"},
        )
        assert done.status_code in (200, 201)
        missing = plain.get(f"{sim.base_url}/nowhere")
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "BadRequest"
    client.get(f"/users/{user.id}/nothing")
    client.request("OPTIONS", "/users")
    counters = sim.counters()
    assert counters["by_kind"] == {"upload": 1, "other": 1, "graph": 2}
    assert counters["by_endpoint"] == {
        "PUT /_upload/{session}": 1,
        "GET unmatched": 2,
        "OPTIONS unmatched": 1,
    }
    assert counters["total"] == 4 and counters["batch_requests"] == 0
