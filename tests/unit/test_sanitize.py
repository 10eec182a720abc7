"""The one scrubber (bulkchange.sanitize), table-driven: every way a secret or a person's data was
seen to slip through, each row with the text, what must be gone and what must stay."""
import base64
import json
from urllib.parse import quote

import pytest

from bulkchange import sanitize
from bulkchange.sanitize import REDACTED, mask_name, sanitize_text, sanitize_value

# (case, text, must be gone, must stay)
CASES = [
    ("camelCase accessToken", '{"accessToken": "AT-1234567890", "iccid": "8901260000000000018"}',
     ["AT-1234567890"], ["8901260000000000018"]),
    ("camelCase clientSecret", '{"clientSecret":"CS-abcdefgh","clientId":"app-1"}', ["CS-abcdefgh"], ["app-1"]),
    ("camelCase refreshToken", '{"refreshToken":"RT-zzzzzzzz","expiresIn":3600}', ["RT-zzzzzzzz"], ["3600"]),
    ("id_token", '{"id_token": "idtok-123456", "token_type": "Bearer"}', ["idtok-123456"], ['"token_type"']),
    ("subscription_key", '{"subscription_key": "subkey-98765"}', ["subkey-98765"], []),
    ("Ocp-Apim header line", "Ocp-Apim-Subscription-Key: hdr-key-4242\nAccept: application/json",
     ["hdr-key-4242"], ["application/json"]),
    ("numeric password", '{"username": "svc", "password": 123456789}', ["123456789"], []),
    ("nested password", '{"auth": {"password": {"value": "deep-secret-1"}}}', ["deep-secret-1"], []),
    ("password in a list", '{"password": ["a-secret-99"]}', ["a-secret-99"], []),
    ("lowercase bearer", "sent with bearer abcdefghijkl12345 to the carrier", ["abcdefghijkl12345"], ["carrier"]),
    ("Basic credential", "Authorization: Basic ZGVtbzpzZWNyZXQ=", ["ZGVtbzpzZWNyZXQ="], []),
    ("user:pass@ in a URL", "GET https://user:p4ssw0rd!@carrier.example/x failed", ["p4ssw0rd!"],
     ["carrier.example/x"]),
    ("XML element", "<auth><clientSecret>xml-secret-77</clientSecret><iccid>8901</iccid></auth>",
     ["xml-secret-77"], ["<iccid>8901</iccid>"]),
    ("XML element with prefix and attributes", '<s:Body><ns:Password type="x">pw-xml-9</ns:Password></s:Body>',
     ["pw-xml-9"], []),
    ("XML attribute", '<login user="ops" password="attr-secret-5"/>', ["attr-secret-5"], ['user="ops"']),
    ("query string", "GET /esims?apiKey=XYZ123abc&limit=10", ["XYZ123abc"], ["limit=10"]),
    ("form body", "grant_type=client_credentials&client_secret=form-secret-1", ["form-secret-1"],
     ["grant_type=client_credentials"]),
    ("carrier echoing a secret in prose", "HTTP 400: invalid app-secret tg-probe-secret-42", ["tg-probe-secret-42"],
     ["HTTP 400: invalid app-secret"]),
    ("JSON in a JSON string", json.dumps({"note": json.dumps({"password": "inner-pw-1"})}), ["inner-pw-1"], []),
    ("cut JSON: unterminated token at the end", '{"accessToken": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi',
     ["eyJhbGciOiJIUzI1NiJ9"], []),
    ("bare JWT", "token was eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl ok",
     ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0"], ["ok"]),
    ("Python repr", "{'sessionToken': 's-ession-1', 'status': 'ok'}", ["s-ession-1"], ["'status': 'ok'"]),
    # personal data
    ("ContactName", '{"ContactName": "John Doe", "CostCenter1": "CC-1"}', ["John Doe"], ["CC-1"]),
    ("names", '{"firstName":"John","lastName":"Doe","iccid":"8901"}', ['"John"', '"Doe"'], ["8901"]),
    ("Telegence relatedParty", '{"relatedParty":[{"name":"Jane Roe","role":"customer"}],"service":{}}',
     ["Jane Roe"], ['"service"']),
    ("Telegence contactName characteristic",
     '{"serviceCharacteristic":[{"name":"contactName","value":"Ann Lee"},{"name":"sim","value":"8901260000000000018"}]}',
     ["Ann Lee"], ["8901260000000000018"]),
    ("ThingSpace primaryPlaceOfUse",
     '{"primaryPlaceOfUse":{"customerName":{"firstName":"Al"},"address":{"addressLine1":"1 Main St","city":"X"}}}',
     ["1 Main St", '"Al"'], []),
    ("Rev.io contacts", '{"customer_id": 7, "contacts": [{"email": "a@b.example", "phone": "555"}]}',
     ["a@b.example"], ['"customer_id": 7']),
    ("ThingSpace place-of-use extended attributes",
     '{"extendedAttributes":[{"key":"PrimaryPlaceOfUseFirstName","value":"Al"},'
     '{"key":"PrimaryPlaceOfUseAddressLine1","value":"1 Main St"},{"key":"MDN","value":"4045550100"}]}',
     ['"Al"', "1 Main St"], ["4045550100", "PrimaryPlaceOfUseFirstName"]),
    ("ThingSpace custom field holding the ContactName",
     '{"customFieldsToUpdate":[{"key":"CustomField1","value":"Ann Lee"},{"key":"CustomField2","value":"CC-2"}]}',
     ["Ann Lee"], ["CC-2"]),
    ("Jasper default username field", '{"iccid":"8901","accountCustom1":"Ann Lee","accountCustom2":"x-2"}',
     ["Ann Lee"], ["x-2"]),
    ("Rev.io service description (the user's name there)",
     '{"service_id":1,"customer_id":7,"service_type_id":3,"number":"4045550100","description":"Ann Lee"}',
     ["Ann Lee"], ["4045550100"]),
    ("Rev.io service product description is not personal",
     '{"service_product_id":1,"service_id":2,"customer_id":7,"description":"5GB plan"}', [], ["5GB plan"]),
    ("Rev.io customer and contact fields",
     '{"first_name":"Ann","last_name":"Leeward","email":"a@b.example","mobile_phone":"4045550111",'
     '"address_1":"9 Elm","company_name":"Acme"}',
     ['"Ann"', "Leeward", "a@b.example", "4045550111", "9 Elm"], ["Acme"]),
    ("name and e-mail words at the end of a key", '{"billingContactLastName":"Leeward","subscriberEmail":"a@b.example"}',
     ["Leeward", "a@b.example"], []),
    ("a carrier's error description is not personal", '{"id":"x","description":"SIM already has a line"}', [],
     ["SIM already has a line"]),
    ("zip codes the carrier picks a number by are kept", '{"mdnZipCode":"30004","serviceZipCode":"30005"}', [],
     ["30004", "30005"]),
    ("an IP address is not personal", '{"ipAddress": "10.1.2.3"}', [], ["10.1.2.3"]),
    ("nothing to remove", '{"iccid": "8901260000000000006", "status": "DEACTIVATED"}', [],
     ['{"iccid": "8901260000000000006", "status": "DEACTIVATED"}']),
    ("token expiry is not a secret", '{"expires_in": 3600, "token_type": "bearer"}', [], ["3600"]),
    ("our own prose is kept", "ThingSpace session token expired; retried once", [],
     ["ThingSpace session token expired; retried once"]),
]


@pytest.mark.parametrize("case,text,gone,stay", CASES, ids=[c[0] for c in CASES])
def test_scrubber_table(case, text, gone, stay):
    out = sanitize_text(text)
    for value in gone:
        assert value not in out, f"{case}: {value!r} left in {out!r}"
    for value in stay:
        assert value in out, f"{case}: {value!r} lost from {out!r}"


SECRET = "s3cr3t/With+chars=&more"

# every form a known secret takes on its way to a column
FORMS = [
    ("exact", f"key {SECRET} end"),
    ("URL-encoded", f"GET /x?k={quote(SECRET, safe='')}"),
    ("JSON-escaped", json.dumps({"note": f"said {SECRET}"})),
    ("JSON-escaped slash", '{"note": "' + SECRET.replace("/", "\\/") + '"}'),
    ("base64", base64.b64encode(SECRET.encode()).decode()),
    ("base64 inside a Basic credential", base64.b64encode(f"user:{SECRET}".encode()).decode()),
    ("HTML-escaped", "<td>" + SECRET.replace("&", "&amp;") + "</td>"),
    ("cut: prefix at the end", f"answer ... {SECRET[:9]}"),
    ("cut: suffix at the start", f"{SECRET[-9:]} ... rest"),
]


@pytest.mark.parametrize("case,text", FORMS, ids=[f[0] for f in FORMS])
def test_known_secret_in_every_form(case, text):
    out = sanitize_text(text, [SECRET])
    assert SECRET not in out
    for form in (quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode(), SECRET[:9], SECRET[-9:]):
        assert form not in out, f"{case}: {out!r}"


def test_registered_secrets_are_removed_everywhere():
    sanitize.register_secret("registered-probe-7781")
    assert "registered-probe-7781" not in sanitize_text("carrier said registered-probe-7781")
    assert sanitize_value({"a": ["x registered-probe-7781"]}) == {"a": [f"x {REDACTED}"]}


def test_short_secret_removed_as_a_token_only():
    out = sanitize_text("pin 42 sent; ICCID 8901260000000004212", ["42"])
    assert "pin ***" in out and "8901260000000004212" in out


def test_scrub_before_truncate():
    text = "x" * 3990 + '{"accessToken": "' + "T" * 40 + '"}'
    out = sanitize_text(text, limit=4000)
    assert len(out) <= 4000 and "TTTT" not in out


def test_structures_and_exceptions():
    value = {"rows": [{"password": 5, "ok": 1}], "Authorization": "Basic abc", "msg": "bearer abcdefghijklmnop"}
    clean = sanitize_value(value)
    assert clean == {"rows": [{"password": REDACTED, "ok": 1}], "Authorization": REDACTED, "msg": f"bearer {REDACTED}"}
    exc = sanitize.sanitize_exception(ValueError("HTTP 400: clientSecret=abc12345"))
    assert "abc12345" not in str(exc)


def test_mask_name_keeps_initials_only():
    assert mask_name("John Doe") == "J*** D***" and mask_name(None) == ""


def test_xcom_values_are_scrubbed():
    from bulkchange_plugins.xcom import ScrubbedXCom

    stored = ScrubbedXCom.serialize_value({"counts": {"PROCESSED": 2}, "error": "HTTP 401: clientSecret=xc-9912345",
                                           "ContactName": "Jane Roe"}, key="return_value")
    text = str(stored)
    assert "xc-9912345" not in text and "Jane Roe" not in text and "PROCESSED" in text


def test_json_patch_values_of_personal_fields_are_masked():
    ops = [{"op": "replace", "path": "/ContactName", "value": "Maria Gonzalez"},
           {"op": "add", "path": "/contacts/0/email", "value": "maria@example.com"},
           {"op": "replace", "path": "/fields/2/value", "value": "CC-17"},
           {"op": "replace", "path": "/Status", "value": "ACTIVE"}]
    clean = sanitize_value(ops)
    assert "Maria Gonzalez" not in json.dumps(clean) and "maria@example.com" not in json.dumps(clean)
    assert [op["value"] for op in clean[2:]] == ["CC-17", "ACTIVE"]  # not personal: kept
    assert "Gonzalez" not in sanitize_text(json.dumps(ops))


def _edges_reference(text: str, values) -> str:
    """The cut-text rule as first written (every prefix / suffix length tried): the quick check in
    sanitize._remove_known must give exactly this."""
    from bulkchange.sanitize import _MIN_EDGE, REDACTED as R

    for secret in values:
        if len(secret) <= _MIN_EDGE:
            continue
        for n in range(len(secret) - 1, _MIN_EDGE - 1, -1):
            if text.endswith(secret[:n]):
                text = text[: len(text) - n] + R
                break
        for n in range(len(secret) - 1, _MIN_EDGE - 1, -1):
            if text.startswith(secret[-n:]):
                text = R + text[n:]
                break
    return text


def test_secret_pieces_at_the_edges_of_cut_text_match_the_reference_rule():
    import random

    from bulkchange import sanitize

    rng = random.Random(16)
    secrets = ["abcabcab-42", "zzzzzzzz", "k3y-Value-9x", "aaaa1aaaa"]
    pattern = sanitize._known_pattern(frozenset(secrets))
    for _ in range(3000):
        secret = rng.choice(secrets)
        middle = "".join(rng.choice("abcz -19xK") for _ in range(rng.randint(0, 12)))
        head = secret[-rng.randint(1, len(secret)):] if rng.random() < 0.5 else ""
        tail = secret[:rng.randint(1, len(secret))] if rng.random() < 0.5 else ""
        text = head + middle + tail
        expected = _edges_reference(pattern.sub(sanitize.REDACTED, text), frozenset(secrets))
        assert sanitize._remove_known(text, secrets) == expected, text
