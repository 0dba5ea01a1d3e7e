"""A token issued before consent was withdrawn still parses; Graph then answers every call
with Authorization_IdentityNotFound. That is a revoked consent, not a permissions bug."""

from __future__ import annotations

import pytest

from safekeep.graph.errors import ConsentRequired, Forbidden, classify


@pytest.mark.parametrize("status", [401, 403])
def test_identity_not_found_means_consent_revoked(status: int) -> None:
    error = classify(
        status,
        "Authorization_IdentityNotFound",
        "The identity of the calling application could not be established.",
    )
    assert isinstance(error, ConsentRequired)
    assert error.reason == "consent_revoked"


def test_other_forbidden_answers_stay_forbidden() -> None:
    assert type(classify(403, "ErrorAccessDenied", "Access is denied.")) is Forbidden
