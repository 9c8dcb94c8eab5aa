"""Pure pieces of the Facebook protocol, compared against vectors computed with openssl."""

from __future__ import annotations

import json
import time

import pytest

from fort_hub.authenticators.meta import (
    MAX_FUTURE_SKEW,
    GraphError,
    SignedRequestError,
    appsecret_proof,
    b64url_decode,
    graph_error,
    make_signed_request,
    parse_signed_request,
)

SECRET = "dev-facebook-app-secret"
# printf '%s' "$PAYLOAD_B64" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64url
PAYLOAD_B64 = (
    "eyJhbGdvcml0aG0iOiJITUFDLVNIQTI1NiIsImlzc3VlZF9hdCI6MTcwMDAwMDAwMCwidXNlcl9pZCI6IjEwMDAw"
    "MDAwMDAwMDAwMDAxIn0"
)
SIG_B64 = "JHV4qhso1_vpeCzjAhaOfkIEWKxGfv_7vB2xswGusyo"
VECTOR = f"{SIG_B64}.{PAYLOAD_B64}"


def test_appsecret_proof_matches_openssl():
    # echo -n "EAABsbCS1iHgBAZAZD" | openssl dgst -sha256 -hmac "dev-facebook-app-secret"
    assert appsecret_proof("EAABsbCS1iHgBAZAZD", SECRET) == (
        "612220afc0eb9212855e71a8894926fe0fa0b9981003f5fd940155fae7079bf5"
    )


def test_parse_signed_request_vector():
    payload = parse_signed_request(VECTOR, SECRET)
    assert payload == {
        "algorithm": "HMAC-SHA256",
        "issued_at": 1700000000,
        "user_id": "10000000000000001",
    }


def test_padded_segments_are_accepted():
    padded = f"{SIG_B64}=.{PAYLOAD_B64}="
    assert parse_signed_request(padded, SECRET)["user_id"] == "10000000000000001"


def test_round_trip_and_max_age():
    sr = make_signed_request({"user_id": 42}, SECRET)
    assert parse_signed_request(sr, SECRET, max_age=60)["user_id"] == "42"
    with pytest.raises(SignedRequestError, match="older than 3600 seconds"):
        parse_signed_request(VECTOR, SECRET, max_age=3600, now=1700000000 + 3601)


def test_issued_at_in_the_future_is_refused_beyond_the_skew():
    """#10 finding 12: one dated 10 years ahead never went stale."""
    t = 1700000000
    assert parse_signed_request(VECTOR, SECRET, max_age=3600, now=t - MAX_FUTURE_SKEW)
    with pytest.raises(SignedRequestError, match=r"dated in the future .* more than 300 seconds"):
        parse_signed_request(VECTOR, SECRET, max_age=3600, now=t - MAX_FUTURE_SKEW - 1)
    decade = make_signed_request({"user_id": "1", "issued_at": time.time() + 10 * 365 * 86400},
                                 SECRET)  # fmt: skip
    with pytest.raises(SignedRequestError, match="dated in the future"):
        parse_signed_request(decade, SECRET, max_age=3600)
    for bad in ("soon", None, True):
        sr = make_signed_request({"user_id": "1", "issued_at": bad}, SECRET)
        with pytest.raises(SignedRequestError, match="no numeric issued_at"):
            parse_signed_request(sr, SECRET, max_age=3600)


BAD = {
    "wrong secret": (VECTOR, "other-secret", "signature does not match"),
    "tampered payload (user_id ...02)": (f"{SIG_B64}.{PAYLOAD_B64[:-4]}yIn0", SECRET,
                                         "signature does not match"),
    "wrong algorithm": ("AAAA.eyJhbGdvcml0aG0iOiJITUFDLVNIQTEiLCJ1c2VyX2lkIjoiMSJ9", SECRET,
                        "algorithm must be HMAC-SHA256, not 'HMAC-SHA1'"),
    "no algorithm": ("AAAA.eyJ1c2VyX2lkIjoiMSJ9", SECRET, "algorithm must be HMAC-SHA256, not None"),
    "one segment": (PAYLOAD_B64, SECRET, "two base64url segments"),
    "three segments": (f"{VECTOR}.x", SECRET, "two base64url segments"),
    "bad padding (length 1 mod 4)": (f"{SIG_B64}.{PAYLOAD_B64}AB", SECRET, "bad base64url padding"),
    "bad padding (too much)": (f"{SIG_B64}.{PAYLOAD_B64}==", SECRET, "bad base64url padding"),
    "standard base64 alphabet": (f"{SIG_B64}+/.{PAYLOAD_B64}", SECRET, "not base64url"),
    "payload not json": ("AAAA.bm90IGpzb24", SECRET, "payload is not JSON"),
    "payload a list": ("AAAA.WzFd", SECRET, "not a JSON object"),
    "empty": ("", SECRET, "signed_request is missing"),
    "oversized": ("A" * 5000, SECRET, "longer than 4096"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_signed_requests(case):
    value, secret, message = BAD[case]
    with pytest.raises(SignedRequestError) as e:
        parse_signed_request(value, secret)
    assert message in str(e.value)


def test_no_user_id_is_refused():
    sr = make_signed_request({}, SECRET)
    with pytest.raises(SignedRequestError, match="no user_id"):
        parse_signed_request(sr, SECRET)


def test_b64url_decode():
    assert b64url_decode("eyJhIjoxfQ") == b'{"a":1}'
    assert b64url_decode("eyJhIjoxfQ==") == b'{"a":1}'


@pytest.mark.parametrize(
    "code,status,text",
    [
        (4, 503, "limiting requests from this hub right now (error 4)"),
        (17, 503, "(error 17)"),
        (32, 503, "(error 32)"),
        (613, 503, "(error 613)"),
        (190, 403, "did not accept the login token (error 190/463: Session has expired.)"),
        (100, 403, "Facebook refused the request (error 100: Session has expired.)"),
    ],
)
def test_graph_error_messages(code, status, text):
    body = {"error": {"message": "Session has expired.", "type": "OAuthException", "code": code,
                      "error_subcode": 463 if code == 190 else None, "fbtrace_id": "Abc"}}  # fmt: skip
    err = graph_error(body, 400)
    assert isinstance(err, GraphError)
    assert (err.status, err.code, err.fbtrace_id) == (status, code, "Abc")
    assert text in err.message


def test_graph_error_without_json():
    assert graph_error(None, 502).message == "Facebook answered with HTTP 502 and no error details."
    assert graph_error(json.loads('{"error": "x"}'), 400).status == 502
