"""BoundedSession reads the proxy / CA bundle environment once per scheme and host (a batch's CPU per
device: requests walks the whole os.environ twice per request otherwise) and gives the same settings
as a plain requests.Session for that environment."""
import pytest
import requests

from bulkchange.carriers.http import BoundedSession

URLS = ["http://carrier.example/api/v1/devices/1", "https://carrier.example/api", "https://inside.corp/x",
        "http://127.0.0.1:8080/jasper"]


@pytest.mark.parametrize("env", [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128", "HTTP_PROXY": "http://proxy.example:3128",
     "NO_PROXY": "inside.corp,127.0.0.1"},
    {"ALL_PROXY": "http://other.example:8080", "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
    {"CURL_CA_BUNDLE": "/tmp/bundle.pem", "no_proxy": "*", "http_proxy": "http://p:1"},
])
def test_same_settings_as_requests_for_every_url(monkeypatch, env):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
                 "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ours, plain = BoundedSession(), requests.Session()
    for url in URLS:
        for verify in (None, True, False, "/my/ca.pem"):
            for _ in range(2):  # first read, then from the cache
                assert ours.merge_environment_settings(url, {}, None, verify, None) == \
                    plain.merge_environment_settings(url, {}, None, verify, None), (url, verify)
    # proxies given with the request still win, as with requests
    given = {"https": "http://given.example:1"}
    assert ours.merge_environment_settings(URLS[1], dict(given), None, None, None) == \
        plain.merge_environment_settings(URLS[1], dict(given), None, None, None)


def test_the_environment_is_read_once_per_host(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    session = BoundedSession()
    first = session.merge_environment_settings(URLS[1], {}, None, None, None)
    monkeypatch.setenv("HTTPS_PROXY", "http://late.example:3128")
    assert session.merge_environment_settings(URLS[1], {}, None, None, None) == first
    # a new session (a new task) sees the new environment
    assert BoundedSession().merge_environment_settings(URLS[1], {}, None, None, None)["proxies"]["https"] == \
        "http://late.example:3128"
