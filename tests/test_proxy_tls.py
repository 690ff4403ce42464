"""wss backends and URLs that fail only when the link connects: a clear status on the link."""

from __future__ import annotations

import pytest

from chargers.models import Charger, RegistrationStatus
from proxy.models import Role, UpstreamBackend, UpstreamLink
from tests.conftest import wait_until
from tests.proxy_cpo import FakeCpo, self_signed_tls

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_cpo(tmp_path):
    backend = FakeCpo(tls=self_signed_tls(tmp_path))
    yield backend
    backend.close()


def link_for(cp_id: str, backend_name: str, url: str, **options) -> UpstreamLink:
    charger = Charger.objects.create(charge_point_id=cp_id, registration_status=RegistrationStatus.ACCEPTED)
    backend = UpstreamBackend.objects.create(name=backend_name, url=url, message_timeout_s=2, **options)
    return UpstreamLink.objects.create(charger=charger, backend=backend, role=Role.PRIMARY)


def status(link: UpstreamLink) -> tuple[bool, str]:
    row = UpstreamLink.objects.get(pk=link.pk)
    return row.connected, row.last_error


def test_a_self_signed_backend_is_refused_when_verified_and_used_when_not(ocpp_url, charger_factory, tls_cpo):
    assert tls_cpo.url.startswith("wss://")
    strict = link_for("CP-TLS-STRICT", "Verified", tls_cpo.url)
    lab = link_for("CP-TLS-LAB", "Lab", tls_cpo.url, verify_tls=False)
    for cp_id in ("CP-TLS-STRICT", "CP-TLS-LAB"):
        charger_factory(ocpp_url, cp_id).connect().boot()
    wait_until(lambda: status(strict)[1])
    connected, error = status(strict)
    assert not connected
    assert error.startswith("TLS: the backend's certificate is not trusted (self-signed certificate)")
    assert "CP-TLS-STRICT" not in tls_cpo.cps
    wait_until(lambda: status(lab)[0])
    assert tls_cpo.actions("CP-TLS-LAB")[0] == "BootNotification"


def test_a_url_that_fails_at_connect_time_is_shown_clearly(ocpp_url, charger_factory):
    # Stored before the URL was checked (an older version, a direct database edit): never valid.
    wrong_scheme = link_for("CP-URL-SCHEME", "Old row", "ws://127.0.0.1:1/ocpp")
    UpstreamBackend.objects.filter(pk=wrong_scheme.backend_id).update(url="http://127.0.0.1:1/ocpp")
    no_host = link_for("CP-URL-HOST", "Typo", "ws://cpo.invalid/ocpp")  # valid, but no such host
    for cp_id in ("CP-URL-SCHEME", "CP-URL-HOST"):
        charger_factory(ocpp_url, cp_id).connect().boot()
    wait_until(lambda: status(wrong_scheme)[1] and status(no_host)[1])
    assert status(wrong_scheme) == (False, "invalid URL: http://127.0.0.1:1/ocpp/CP-URL-SCHEME isn't a valid URI: "
                                           "scheme isn't ws or wss")
    assert status(no_host)[1].startswith("unknown host: ")
