"""``$select`` against the Outlook entities' types, as Graph's OData layer reads it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from msgraph.generated.models.attachment import Attachment
from msgraph.generated.models.calendar import Calendar
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.contact_folder import ContactFolder
from msgraph.generated.models.event import Event
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message

from graphsim.properties import PROPERTIES

MODELS = {
    "attachment": Attachment,
    "calendar": Calendar,
    "contact": Contact,
    "contactFolder": ContactFolder,
    "event": Event,
    "mailFolder": MailFolder,
    "message": Message,
}


def test_the_names_are_the_sdks() -> None:
    """graphsim's lists are msgraph-sdk's v1.0 models' properties, no more and no fewer."""
    assert set(PROPERTIES) == set(MODELS)
    for entity, model in MODELS.items():
        names = {k for k in model().get_field_deserializers() if not k.startswith("@")}
        assert PROPERTIES[entity] == names, entity


@pytest.mark.parametrize(
    ("path", "select", "entity"),
    [
        ("/users/{u}/messages", "subject,contentId", "message"),
        ("/users/{u}/mailFolders/inbox/messages/delta", "subject,nope", "message"),
        ("/users/{u}/mailFolders", "displayName,subject", "mailFolder"),
        ("/users/{u}/events", "subject,displayName", "event"),
        ("/users/{u}/contacts", "givenName,subject", "contact"),
        ("/users/{u}/calendars", "name,subject", "calendar"),
    ],
)
def test_an_unknown_property_is_refused(
    client: httpx.Client, user: Any, path: str, select: str, entity: str
) -> None:
    answer = client.get(path.format(u=user.id), params={"$select": select})
    assert answer.status_code == 400
    error = answer.json()["error"]
    unknown = select.split(",")[1]
    assert error["code"] == "RequestBroker--ParseUri"
    assert error["message"] == (
        f"Could not find a property named '{unknown}' on type 'microsoft.graph.{entity}'."
    )


def test_known_properties_any_case_and_nested_attachment_selects(
    client: httpx.Client, user: Any
) -> None:
    base = f"/users/{user.id}/messages"
    assert client.get(base, params={"$select": "Subject,receivedDateTime,id"}).status_code == 200
    good = "$select=id,name,contentType,size,isInline,lastModifiedDateTime"
    assert client.get(base, params={"$expand": f"attachments({good})"}).status_code == 200
    # contentId belongs to fileAttachment, not to the attachment type a list is read as.
    bad = client.get(base, params={"$expand": "attachments($select=id,contentId)"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == (
        "Could not find a property named 'contentId' on type 'microsoft.graph.attachment'."
    )
    # Beta's types have more: not judged by v1.0's names.
    beta = client.get(
        str(client.base_url).rstrip("/").replace("/v1.0", "/beta")
        + f"/users/{user.id}/mailFolders",
        params={"$select": "displayName,betaOnlyThing"},
    )
    assert beta.status_code == 200


def test_a_written_property_the_type_does_not_have_is_refused(
    client: httpx.Client, user: Any
) -> None:
    """A created or changed item's JSON is read against its type: an unknown property is a
    400 and nothing is stored (messages and contacts kept any key, and answered it back)."""
    base = f"/users/{user.id}"

    def subjects() -> list[str]:
        listed = client.get(f"{base}/messages", params={"$top": "1000", "$select": "subject"})
        return [m.get("subject") for m in listed.json()["value"]]

    before = subjects()
    made = client.post(f"{base}/messages", json={"subject": "typo", "bodyy": {"content": "x"}})
    assert made.status_code == 400
    assert made.json()["error"] == {
        **made.json()["error"],
        "code": "RequestBodyRead",
        "message": "The property 'bodyy' does not exist on type 'microsoft.graph.message'.",
    }
    assert subjects() == before
    contact = client.post(
        f"{base}/contacts", json={"@odata.type": "#microsoft.graph.contact", "givenName": "Ada"}
    )
    assert contact.status_code == 201  # annotations are not properties
    url = f"{base}/contacts/{contact.json()['id']}"
    changed = client.patch(url, json={"givenName": "Grace", "favouriteColour": "teal"})
    assert changed.status_code == 400
    assert changed.json()["error"]["code"] == "RequestBodyRead"
    kept = client.get(url).json()
    assert kept["givenName"] == "Ada" and "favouriteColour" not in kept
    folder = client.post(f"{base}/mailFolders", json={"displayName": "F", "colour": "red"})
    assert folder.status_code == 400
    assert folder.json()["error"]["message"] == (
        "The property 'colour' does not exist on type 'microsoft.graph.mailFolder'."
    )
