from bulkchange.sanitize import sanitize_text


def test_known_secret_values_removed():
    assert "k3y" not in sanitize_text("PUT /x key=k3y-value-1", ["k3y-value-1"])


def test_secret_fields_removed_whatever_their_value():
    text = '{"username": "ops", "password": "p@ss", "access_token": "abc.def", "sessionToken": "s-1"}'
    out = sanitize_text(text)
    for secret in ("p@ss", "abc.def", "s-1"):
        assert secret not in out
    assert '"username": "ops"' in out


def test_headers_and_auth_schemes_removed():
    out = sanitize_text("Authorization: Basic ZGVtbzpzZWNyZXQ=\nVZ-M2M-Token: 1234-5678\nBearer eyJhbGciOi.xyz")
    assert "ZGVtbzpzZWNyZXQ=" not in out and "1234-5678" not in out and "eyJhbGciOi" not in out


def test_query_string_secrets_removed_and_rest_kept():
    out = sanitize_text("GET /esims?apiKey=XYZ123&limit=10")
    assert "XYZ123" not in out and "limit=10" in out


def test_nothing_to_remove_is_unchanged():
    text = '{"iccid": "8901260000000000006", "status": "DEACTIVATED"}'
    assert sanitize_text(text, ["not-there"]) == text
