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


REQUESTS = [
    dict(method="put", url="http://127.0.0.1:8080/jasper/rws/api/v1/devices/8901", json={"status": "DEACTIVATED"},
         headers={"Accept": "application/json", "Authorization": "Basic dTpw"}),
    dict(method="GET", url="https://carrier.example/api/v1/devices", params={"modifiedSince": "2026-01-01", "page": 2,
                                                                              "skip": None},
         headers={"Accept": "application/json"}),
    dict(method="POST", url="https://carrier.example/token", data={"grant_type": "client_credentials"},
         auth=("client", "secret"), headers={"User-Agent": None, "Content-Type": "application/x-www-form-urlencoded"}),
    dict(method="delete", url="http://carrier.example/api/x?already=1", params={"more": "a b"}, headers={}),
]


def _fields(prepared: requests.PreparedRequest) -> tuple:
    return (prepared.method, prepared.url, dict(prepared.headers), prepared.body, sorted(prepared.hooks))


@pytest.mark.parametrize("kwargs", REQUESTS, ids=[r["method"] + " " + r["url"] for r in REQUESTS])
def test_a_request_is_prepared_as_requests_prepares_it(monkeypatch, tmp_path, kwargs):
    """BoundedSession.prepare_request skips requests' setting merges (their cost per request):
    the prepared request must stay exactly what requests makes of it, also with a session header,
    and with basic auth from ~/.netrc for a request without auth of its own."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine carrier.example login fromnetrc password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    ours, plain = BoundedSession(), requests.Session()
    for session in (ours, plain):
        session.headers["X-Session"] = "s"
    for _ in range(2):  # the second time the netrc answer comes from the session's cache
        assert _fields(ours.prepare_request(requests.Request(**kwargs))) == \
            _fields(plain.prepare_request(requests.Request(**kwargs)))


def test_netrc_is_read_once_per_host(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine carrier.example login first password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    session = BoundedSession()
    request = dict(method="GET", url="https://carrier.example/api")
    first = session.prepare_request(requests.Request(**request)).headers["Authorization"]
    netrc.write_text("machine carrier.example login second password pw\n")
    assert session.prepare_request(requests.Request(**request)).headers["Authorization"] == first
    assert BoundedSession().prepare_request(requests.Request(**request)).headers["Authorization"] != first


def test_a_session_with_cookies_is_prepared_by_requests(monkeypatch):
    """A carrier that sets a cookie gets it back on the next request, exactly as with requests."""
    ours, plain = BoundedSession(), requests.Session()
    for session in (ours, plain):
        session.cookies.set("JSESSIONID", "abc", domain="carrier.example")
    request = dict(method="GET", url="https://carrier.example/api", headers={"Accept": "application/json"})
    prepared = ours.prepare_request(requests.Request(**request))
    assert prepared.headers["Cookie"] == "JSESSIONID=abc"
    assert _fields(prepared) == _fields(plain.prepare_request(requests.Request(**request)))


PLAIN = [
    dict(method="put", url="http://127.0.0.1:8080/jasper/rws/api/v1/devices/89010000000000000001",
         json={"status": "DEACTIVATED", "name": "é ✓"}, headers={"Accept": "application/json", "Authorization": "Basic dTpw"}),
    dict(method="PATCH", url="https://carrier.example/api/v1/lines/5551234567/",
         json=[{"op": "replace", "path": "/plan", "value": "X"}],
         headers={"Content-Type": "application/json-patch+json", "User-Agent": None}),
    dict(method="GET", url="https://carrier.example:8443/api/v1/devices?modifiedSince=2026-01-01T00:00:00Z&page=2",
         headers={"Accept": "application/json"}),
    dict(method="POST", url="http://carrier.example/api/x", headers={}),
    dict(method="DELETE", url="http://carrier.example/api/a%2Fb%20c;v=1", headers=None),
    dict(method="POST", url="http://carrier.example/", json={}, headers={"Content-Length": "2"}),
]


@pytest.mark.parametrize("kwargs", PLAIN, ids=[r["method"] + " " + r["url"] for r in PLAIN])
def test_a_carrier_call_is_prepared_directly_as_requests_prepares_it(kwargs):
    """BoundedSession.request prepares a plain carrier call itself (requests' general preparation is
    a visible part of the client's CPU per request): method, URL, headers in their order and body
    must be byte for byte what requests makes of the same call in the same session."""
    ours, plain = BoundedSession(), requests.Session()
    for session in (ours, plain):
        session.headers["X-Session"] = "s"
    fast = ours.prepare_plain(kwargs["method"], kwargs["url"], kwargs["headers"], kwargs.get("json"))
    assert fast is not None
    slow = plain.prepare_request(requests.Request(**kwargs))
    assert _fields(fast) == _fields(slow)
    assert list(fast.headers.items()) == list(slow.headers.items())  # the order on the wire too


def test_a_url_is_prepared_directly_only_where_requests_would_send_it_as_written():
    """Thousands of URLs built from characters that requests and urllib3 rewrite (case, dot
    segments, escapes, spaces, default ports, brackets...): wherever the direct preparation takes
    one, requests' own preparation leaves it unchanged; the typical carrier URLs are all taken."""
    import random

    from bulkchange.carriers.http import _PLAIN_URL

    rng = random.Random(16)
    parts = ["a", "Z", "0", "-", ".", "..", "_", "~", "%2F", "%2f", "%", " ", "é", "/", "//", "?", "&", "=", "#",
             ":", "@", "!", "$", "'", "(", "*", "+", ",", ";", "[", "]", "\\", "|", "^", "`", "{", "\"", "<"]
    hosts = ["http://h", "https://h.example", "http://127.0.0.1:8080", "http://H", "HTTP://h", "http://h:080",
             "http://h:80", "http://[::1]:8", "http://u:p@h", "http://h.", "http://-h", "https://xn--bcher-kva.example"]
    taken = 0
    for _ in range(20000):
        url = rng.choice(hosts) + "/" + "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        if _PLAIN_URL.fullmatch(url):
            taken += 1
            prepared = requests.PreparedRequest()
            prepared.prepare_url(url, None)
            assert prepared.url == url, url
    assert taken > 1000
    for url in ("http://127.0.0.1:8080/jasper/rws/api/v1/devices/8901", "https://h.example/api/v1/x?a=1&b=%2F",
                "https://thingspace.verizon.com/api/m2m/v1/devices/actions/activate"):
        assert _PLAIN_URL.fullmatch(url), url


def test_what_the_direct_preparation_leaves_to_requests():
    session = BoundedSession()
    url = "http://carrier.example/api"
    assert session.prepare_plain("GET", url, {}, None) is not None
    assert session.prepare_plain("GET", url + "/../x", {}, None) is None  # a URL requests rewrites
    with pytest.raises(requests.exceptions.InvalidHeader):  # a header smuggling a line break
        session.prepare_plain("GET", url, {"X-Evil": "a\r\nHost: other"}, None)
    with pytest.raises(requests.exceptions.InvalidJSONError):
        session.prepare_plain("PUT", url, {}, {"n": float("nan")})
    session.cookies.set("JSESSIONID", "abc", domain="carrier.example")
    assert session.prepare_plain("GET", url, {}, None) is None  # cookies: requests' own code
