"""Webhook signatures (tampered, stale, replayed) and the SSRF guard (no private targets unless allowed)."""

from __future__ import annotations

import time

import pytest

from jobyard import jsonutil
from jobyard.errors import ConfigurationError
from jobyard.webhooks import TargetGuard, WebhookSignatureError, WebhookTargetRefused, sign, verify_signature

SECRET = "whsec_test-secret-0123456789"
BODY = jsonutil.dumps({"id": "evt-1", "type": "job.completed", "data": {"job_id": "j1", "status": "succeeded"}})


def test_a_signed_body_verifies_and_returns_the_event() -> None:
    event = verify_signature(BODY, sign(SECRET, BODY), SECRET)
    assert event["id"] == "evt-1" and event["data"]["status"] == "succeeded"


def test_the_header_has_stripes_shape() -> None:
    header = sign(SECRET, BODY, timestamp=1700000000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and v1.startswith("v1=") and len(v1) == 3 + 64


def test_a_tampered_body_is_rejected() -> None:
    header = sign(SECRET, BODY)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(BODY.replace(b"succeeded", b"failed"), header, SECRET)


def test_a_tampered_timestamp_is_rejected() -> None:
    t, v1 = sign(SECRET, BODY).split(",")
    forged = f"t={int(t[2:]) + 60},{v1}"
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(BODY, forged, SECRET)


def test_another_secret_is_rejected() -> None:
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY, sign("whsec_someone-else-entirely", BODY), SECRET)


def test_a_stale_signature_is_rejected() -> None:
    header = sign(SECRET, BODY, timestamp=int(time.time()) - 301)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(BODY, header, SECRET, tolerance=300)
    assert verify_signature(BODY, header, SECRET, tolerance=600)["id"] == "evt-1"


def test_a_replayed_event_is_rejected_when_its_id_was_seen() -> None:
    header = sign(SECRET, BODY)
    seen = {verify_signature(BODY, header, SECRET)["id"]}
    with pytest.raises(WebhookSignatureError, match="replay"):
        verify_signature(BODY, header, SECRET, seen=seen)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=abc,v1=abc", "t=1700000000"])
def test_malformed_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY, header, SECRET)


def test_a_rotated_secret_is_accepted_among_several_signatures() -> None:
    t = int(time.time())
    old = sign("whsec_the-old-secret-0000", BODY, t).split(",")[1]
    header = f"t={t},{old},{sign(SECRET, BODY, t).split(',')[1]}"
    assert verify_signature(BODY, header, SECRET)["id"] == "evt-1"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback
        "http://10.0.0.5/hook",  # private
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "http://224.0.0.1/hook",  # multicast
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "http://0.0.0.0/hook",
        "http://localhost:9/hook",  # a name resolving to loopback
    ],
)
async def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetRefused, match="JOBYARD_WEBHOOK_ALLOW_PRIVATE"):
        await TargetGuard().check(url)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "https://u:p@1.1.1.1/"])
async def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetRefused):
        await TargetGuard().check(url)


async def test_public_addresses_pass() -> None:
    await TargetGuard().check("https://93.184.215.14/hooks")


async def test_private_targets_pass_when_allowed() -> None:
    await TargetGuard(allow_private=True).check("http://127.0.0.1:8080/hook")
    allow = TargetGuard.from_settings(False, "10.1.0.0/16, localhost")
    await allow.check("http://10.1.2.3/hook")
    await allow.check("http://localhost:8080/hook")
    with pytest.raises(WebhookTargetRefused):
        await allow.check("http://10.2.0.1/hook")


def test_a_bad_allow_list_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="JOBYARD_WEBHOOK_ALLOW_HOSTS"):
        TargetGuard.from_settings(False, "10.0.0.0/99")
