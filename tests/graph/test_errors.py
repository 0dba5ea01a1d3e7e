"""How Graph and Entra answers are sorted into errors a caller can act on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from safekeep.graph import errors
from safekeep.graph.errors import (
    AuthError,
    AuthUnavailable,
    Conflict,
    ConsentRequired,
    Forbidden,
    InvalidClientSecret,
    MailboxNotEnabled,
    NotFound,
    ResyncRequired,
    TenantNotFound,
    TransientError,
    UserNotFound,
    auth_error_from_oauth,
    classify,
    parse_error_body,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "code", "inner", "expected", "reason"),
    [
        (404, "ErrorItemNotFound", None, NotFound, "not_found"),
        (404, "itemNotFound", None, NotFound, "not_found"),
        (404, "ResourceNotFound", None, NotFound, "not_found"),
        (404, "Request_ResourceNotFound", None, UserNotFound, "user_not_found"),
        (404, "MailboxNotEnabledForRESTAPI", None, MailboxNotEnabled, "mailbox_not_found"),
        (404, "ErrorInvalidUser", None, UserNotFound, "user_not_found"),
        (403, "Authorization_RequestDenied", None, Forbidden, "permission_missing"),
        (403, "ErrorAccessDenied", None, Forbidden, "permission_missing"),
        (409, "nameAlreadyExists", None, Conflict, "name_conflict"),
        (400, "ErrorFolderExists", None, Conflict, "name_conflict"),
        (410, "resyncRequired", "resyncChangesApplyDifferences", ResyncRequired, "resync_required"),
        (410, "SyncStateNotFound", None, ResyncRequired, "resync_required"),
        (400, "SyncStateInvalid", None, ResyncRequired, "resync_required"),
        (503, "ServiceUnavailable", None, TransientError, "service_unavailable"),
        (507, "insufficientStorage", None, errors.QuotaExceeded, "quota_exceeded"),
        (423, "resourceLocked", None, errors.ResourceLocked, "resource_locked"),
        (400, "BadRequest", None, errors.BadRequest, "bad_request"),
    ],
)
def test_graph_codes_map_to_one_remedy(status, code, inner, expected, reason):
    error = classify(status, code, "message", inner_code=inner, request_id="r-1")
    assert type(error) is expected
    assert error.reason == reason
    assert error.status == status
    assert error.request_id == "r-1"


@pytest.mark.parametrize(
    "message",
    [
        "Access to OData is disabled.",
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
        "AccessPolicy settings.",
    ],
)
def test_an_access_policy_refusal_names_the_mailbox_not_the_consent(message):
    """Exchange's words for a mailbox an application access policy leaves out of scope."""
    error = classify(403, "ErrorAccessDenied", message)
    assert isinstance(error, errors.MailboxAccessDenied)
    assert isinstance(error, Forbidden)
    assert error.reason == "mailbox_access_denied"


def test_resync_keeps_the_location_graph_offered():
    error = classify(410, "resyncRequired", "gone", location="https://g/v1.0/drives/d/root/delta")
    assert isinstance(error, ResyncRequired)
    assert error.location == "https://g/v1.0/drives/d/root/delta"


def test_error_body_is_read_whatever_the_inner_spelling():
    body = (
        b'{"error":{"code":"resyncRequired","message":"m",'
        b'"innererror":{"code":"resyncChangesUploadDifferences","request-id":"abc"}}}'
    )
    assert parse_error_body(body) == (
        "resyncRequired",
        "m",
        "resyncChangesUploadDifferences",
        "abc",
    )
    assert parse_error_body(b"<html>Bad gateway</html>") == (
        "",
        "<html>Bad gateway</html>",
        None,
        None,
    )
    assert parse_error_body(b"") == ("", "", None, None)


def test_messages_do_not_leak_tokens_from_urls():
    error = classify(
        404,
        "itemNotFound",
        "gone",
        method="GET",
        url="https://g/v1.0/drives/d/root/delta?token=SECRET",
    )
    assert "SECRET" not in str(error)
    assert "GET https://g/v1.0/drives/d/root/delta" in str(error)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("2.128", 2.128),
        ("0", 0.0),
        ("-3", 0.0),
        (" 1 ", 1.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date():
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 01 Mar 2025 11:59:00 GMT", now=now) == 0.0


@pytest.mark.parametrize(
    ("body", "expected", "reason"),
    [
        (
            {
                "error": "unauthorized_client",
                "error_codes": [700016],
                "error_description": "AADSTS700016: Application ... was not found in the directory",
            },
            ConsentRequired,
            "consent_revoked",
        ),
        ({"error": "invalid_grant", "error_codes": [65001]}, ConsentRequired, "consent_revoked"),
        ({"error": "invalid_client", "error_codes": [7000229]}, ConsentRequired, "consent_revoked"),
        (
            {"error": "invalid_client", "error_codes": [7000215]},
            InvalidClientSecret,
            "client_secret_invalid",
        ),
        (
            {"error": "invalid_client", "error_codes": [7000222]},
            InvalidClientSecret,
            "client_secret_invalid",
        ),
        ({"error": "invalid_request", "error_codes": [90002]}, TenantNotFound, "tenant_not_found"),
        ({"error": "invalid_request", "error_codes": [900023]}, TenantNotFound, "tenant_not_found"),
        ({"error": "temporarily_unavailable"}, AuthUnavailable, "auth_unavailable"),
        ({"error": "invalid_scope", "error_codes": [1002012]}, AuthError, "auth_failed"),
        # No error_codes list: the code is read from the description.
        (
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret",
            },
            InvalidClientSecret,
            "client_secret_invalid",
        ),
    ],
)
def test_aadsts_codes_map_to_what_the_msp_must_do(body, expected, reason):
    error = auth_error_from_oauth(400, body)
    assert type(error) is expected
    assert error.reason == reason
