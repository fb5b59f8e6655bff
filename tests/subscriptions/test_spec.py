"""Reading a backport Subscription: filters per resource type, payload content, headers."""

from __future__ import annotations

import pytest

from gateway.errors import FhirError
from gateway.search import QueryParser, default_registry
from gateway.subscriptions import read_spec
from tests.subscriptions.harness import subscription

PARSER = QueryParser(default_registry(), 20, 100)


def test_a_typed_filter_applies_to_its_type_and_an_untyped_one_to_every_type_that_has_the_parameter() -> None:
    spec = read_spec(subscription("referral", "https://emr.test/hook", filters=[
        "ServiceRequest?priority=urgent", "patient=Patient/p1"]), PARSER)
    assert spec.filter_items("ServiceRequest") == [("priority", "urgent"), ("patient", "Patient/p1")]
    assert spec.filter_items("Task") == [("patient", "Patient/p1")]


def test_defaults_and_headers() -> None:
    resource = subscription("lab-observation", "https://emr.test/hook", headers=["X-Key:  abc "])
    del resource["channel"]["_payload"]
    spec = read_spec(resource, PARSER)
    assert spec.content == "id-only" and spec.headers == {"X-Key": "abc"} and spec.heartbeat_period is None


@pytest.mark.parametrize("header", [
    "no colon", "Host: evil.test", "Bad Name: x",
    # HTTP sends field values as visible ASCII: httpx cannot encode these, and each notification
    # died as the delivery engine's "internal_error" with an ERROR log line (UnicodeEncodeError)
    "Authorization: Bearer \u00e9t\u00e9", "X-Key: a\x00b", "X-Key: a\rb", "X-Key: " + "v" * 9000,
])
def test_headers_the_server_owns_or_cannot_send_are_refused(header: str) -> None:
    with pytest.raises(FhirError) as caught:
        read_spec(subscription("new-patient", "https://emr.test/hook", headers=[header]), PARSER)
    assert caught.value.expression == ["Subscription.channel.header[0]"]


def test_plain_http_endpoints_can_be_refused() -> None:
    with pytest.raises(FhirError) as caught:
        read_spec(subscription("new-patient", "http://emr.test/hook"), PARSER, allow_http=False)
    assert caught.value.expression == ["Subscription.channel.endpoint"]
