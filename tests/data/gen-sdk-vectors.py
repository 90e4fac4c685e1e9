#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Generate extra AK/SK signing test vectors from the OFFICIAL Huawei Cloud SDK signer.

What it produces
----------------
A JSON list of {name, input, output} objects, in exactly the format of
/work/shared/spec/signing-vectors.json (input keys: ak, sk, sdk_date, method, url,
[query_params], headers, [body], [security_token], [algorithm, region_id, service_name];
output keys: authorization, signed_headers, signature, canonical_request, string_to_sign,
canonical_uri, canonical_query, request_uri, headers_after_signing).

About 300 "rand_NNNN_*" vectors come from a pseudo-random generator with a fixed seed
(SEED below), so the output is byte-for-byte reproducible; a few "edge_NN_*" vectors pin down
SDK quirks on purpose (duplicate header names, whitespace-only values, non-ASCII override
values, stale Authorization/Host headers, lower-case method, ...).

Every output field is computed by the official signer of the PyPI package
huaweicloudsdkcore==3.1.219 (huaweicloudsdkcore.signer.signer: Signer, SM3Signer,
DerivationAKSKSigner) signing a huaweicloudsdkcore.sdk_request.SdkRequest. Nothing here
re-implements the algorithm: a thin subclass only records the values the SDK's own methods
return (canonical request, string to sign, signature, canonical URI) while it signs.

Regenerate (from the repository root):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install huaweicloudsdkcore==3.1.219 \
      && /tmp/v/bin/python tests/data/gen-sdk-vectors.py > tests/data/sdk-vectors-extra.json

(SDK-HMAC-SM3 uses hashlib.new('sm3') from the interpreter's OpenSSL on Python >= 3.7; the
package's own dependencies, e.g. pyasn1, are installed by pip. No extra package is needed when
`python3 -c "import hashlib; hashlib.new('sm3')"` works.)

Check that the feeding rules reproduce the 19 shared vectors byte for byte (exit status 1 and
a diff on stderr on any mismatch):

    /tmp/v/bin/python tests/data/gen-sdk-vectors.py --check tests/data/signing-vectors.json

(that file is a copy of /work/shared/spec/signing-vectors.json). The same --check also works on
the file this script writes: it re-signs every input and compares all nine output fields.

How a vector's input is fed to the SDK (rules recovered from the 19 shared vectors)
-----------------------------------------------------------------------------------
* url "scheme://authority/path?query": schema = scheme, host = authority exactly as written
  (port included when present), resource_path = the raw, still percent-encoded wire path
  (never decoded or normalised here), query = everything after the first '?'.
* Query string -> SdkRequest.query_params (a list of (key, value) tuples, in wire order):
  split on '&'; split each segment on the FIRST '='; a segment without '=' is (key, "");
  key and value are decoded with urllib.parse.unquote(..., errors='replace') (invalid UTF-8
  becomes U+FFFD, a stray '%' stays literal, '+' stays a literal plus, NOT a space).
  EMPTY SEGMENTS ('a=1&&b=2', a trailing '&', a bare trailing '?') are SKIPPED. The shared
  vectors do not cover them and the SDK itself never parses a query string (its callers hand
  it tuples), so this is our convention, not SDK behaviour; no generated vector contains an
  empty segment, so none of them depends on this choice.
* input.query_params (when present, used instead of a URL query): each [key, value] pair
  becomes a tuple, JSON numbers/booleans keep their type (the SDK prints True as "true").
* Headers: input.headers in order, then "X-Sdk-Date": sdk_date appended (pre-set header,
  NOT a patched clock: the shared vectors show X-Sdk-Date before the X-Sdk-Content-Sha256
  header the signer adds itself, which only a pre-set header gives), then
  "X-Security-Token": security_token when present (as BasicCredentials.sign_request does).
  The signer then appends X-Sdk-Content-Sha256/-Sm3 (auto UNSIGNED-PAYLOAD), Host and
  Authorization, in that order.
* body: the input string (UTF-8 encoded by the SDK), or None when omitted.
* algorithm: absent/"SDK-HMAC-SHA256" -> Signer, "SDK-HMAC-SM3" -> SM3Signer,
  "V11-HMAC-SHA256" -> DerivationAKSKSigner.sign(request, service_name, region_id).
* output.headers_after_signing: request.header_params after signing. The SDK stores every
  value it canonicalised as value.strip().encode('utf-8').decode('iso-8859-1') (the wire
  bytes seen as Latin-1); we undo that last step (encode('iso-8859-1').decode('utf-8')) so
  the JSON shows the real text, as the shared vectors do ("X-Utf8": "中文").
* output.canonical_query = Signer.process_canonical_query_string(request) after signing;
  output.request_uri = request.uri set by the signer (resource_path + "?" + canonical query).

Cases skipped because the SDK raised
------------------------------------
The generator deliberately offers a few inputs the SDK cannot sign and drops them when the
signer raises; the kinds seen are listed at the end of a run on stderr:
* a URL with an empty path ("https://host" or "https://host?x=1"): IndexError in
  _process_canonical_uri (it reads url_path[-1] of an empty string);
* query_params with one key carrying both a number and a string: TypeError when the SDK sorts
  the (key, value) tuples.
No other generated kind raised.
"""

import json
import os
import random
import re
import sys
from collections import Counter, OrderedDict
from urllib.parse import unquote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import DerivationAKSKSigner, SM3Signer, Signer

SEED = 20240102
N_RANDOM = 300

# The 42 SparkRTC (CloudRTC) operations, copied from the shared spec file
# cloudrtc-operations.json (python_method, HTTP method, path, query parameter names, has body)
# so the script runs without it; when that file is present, the table is checked against it.
OPERATIONS_FILE = "/work/shared/spec/cloudrtc-operations.json"
OPERATIONS_TABLE = [
    ('list_rtc_abnormal_event_dimension', 'GET', '/v1/rtc/data/abnormal-event/dimension',
     'app room_id dimension start_time end_time', False),
    ('list_rtc_abnormal_event', 'GET', '/v1/{project_id}/rtc/client/abnormalevent',
     'app_id room_id start_time end_time', False),
    ('list_rtc_abnormal_events', 'GET', '/v1/rtc/data/abnormal-events',
     'app room_id uid start_time end_time limit offset', False),
    ('list_rtc_client_qos_details', 'GET', '/v1/{project_id}/rtc/client/qos/details',
     'domain app_id room_id user_id peer_id stream_id direction mid start_time end_time time_type limit offset', False),
    ('list_rtc_event', 'GET', '/v1/{project_id}/rtc/client/event',
     'app_id room_id start_time end_time', False),
    ('list_rtc_history_quality', 'GET', '/v1/{project_id}/rtc/history/quality',
     'app metric start_date end_date', False),
    ('list_rtc_history_scale', 'GET', '/v1/{project_id}/rtc/history/scale',
     'app metric start_date end_date', False),
    ('list_rtc_history_usage', 'GET', '/v1/{project_id}/rtc/history/usage',
     'app metric start_date end_date', False),
    ('list_rtc_realtime_network', 'GET', '/v1/{project_id}/rtc/realtime/network',
     'app room_id metric sdk_type start_time end_time', False),
    ('list_rtc_realtime_quality', 'GET', '/v1/{project_id}/rtc/realtime/quality',
     'app room_id metric sdk_type start_time end_time', False),
    ('list_rtc_realtime_scale_dimension', 'GET', '/v1/{project_id}/rtc/realtime/scale/dimension',
     'app room_id metric dimension time', False),
    ('list_rtc_realtime_scale', 'GET', '/v1/{project_id}/rtc/realtime/scale',
     'app room_id metric start_time end_time', False),
    ('list_rtc_room_list', 'GET', '/v1/{project_id}/rtc/rooms',
     'app room_id state start_time end_time limit offset', False),
    ('list_rtc_user_list', 'GET', '/v1/{project_id}/rtc/users',
     'app room_id uid nickname region isp state start_time end_time limit offset type', False),
    ('create_app', 'POST', '/v2/apps',
     '', True),
    ('create_individual_stream_job', 'POST', '/v2/apps/{app_id}/individual-stream-jobs',
     '', True),
    ('create_mix_job', 'POST', '/v2/apps/{app_id}/mix-stream-jobs',
     '', True),
    ('create_record_rule', 'POST', '/v2/apps/{app_id}/record-rules',
     '', True),
    ('delete_app', 'DELETE', '/v2/apps/{app_id}',
     '', False),
    ('delete_record_rule', 'DELETE', '/v2/apps/{app_id}/record-rules/{rule_id}',
     '', False),
    ('list_apps', 'GET', '/v2/apps',
     'state offset limit', False),
    ('list_obs_bucket_objects', 'GET', '/v2/rtc-ops/buckets/objects',
     'bucket prefix type location', False),
    ('list_obs_buckets', 'GET', '/v2/rtc-ops/buckets',
     '', False),
    ('list_record_rules', 'GET', '/v2/apps/{app_id}/record-rules',
     'offset limit', False),
    ('remove_room', 'POST', '/v2/apps/{app_id}/rooms/{room_id}/dismiss',
     '', False),
    ('remove_users', 'POST', '/v2/apps/{app_id}/rooms/{room_id}/batch-remove-users',
     '', True),
    ('show_app', 'GET', '/v2/apps/{app_id}',
     '', False),
    ('show_auto_record', 'GET', '/v2/apps/{app_id}/auto-record-mode',
     '', False),
    ('show_individual_stream_job', 'GET', '/v2/apps/{app_id}/individual-stream-jobs/{job_id}',
     '', False),
    ('show_mix_job', 'GET', '/v2/apps/{app_id}/mix-stream-jobs/{job_id}',
     '', False),
    ('show_record_callback', 'GET', '/v2/apps/{app_id}/record-callback',
     '', False),
    ('show_record_rule', 'GET', '/v2/apps/{app_id}/record-rules/{rule_id}',
     '', False),
    ('start_app', 'POST', '/v2/apps/{app_id}/enable',
     '', False),
    ('stop_app', 'POST', '/v2/apps/{app_id}/disable',
     '', False),
    ('stop_individual_stream_job', 'DELETE', '/v2/apps/{app_id}/individual-stream-jobs/{job_id}',
     '', False),
    ('stop_mix_job', 'DELETE', '/v2/apps/{app_id}/mix-stream-jobs/{job_id}',
     '', False),
    ('update_auto_record', 'PUT', '/v2/apps/{app_id}/auto-record-mode',
     '', True),
    ('update_individual_stream_job', 'PUT', '/v2/apps/{app_id}/individual-stream-jobs/{job_id}',
     '', True),
    ('update_mix_job', 'PUT', '/v2/apps/{app_id}/mix-stream-jobs/{job_id}',
     '', True),
    ('update_obs_bucket_authority', 'PUT', '/v2/rtc-ops/buckets/authentication',
     '', True),
    ('update_record_callback', 'PUT', '/v2/apps/{app_id}/record-callback',
     '', True),
    ('update_record_rule', 'PUT', '/v2/apps/{app_id}/record-rules/{rule_id}',
     '', True),
]

DEFAULT_AK = "AKEXAMPLE1234567890"
DEFAULT_SK = "SKEXAMPLEabcdefghijklmnopqrstuvwxyz0123"
DEFAULT_DATE = "20240102T030405Z"
PROJECT_ID = "0123456789abcdef0123456789abcdef"

OUTPUT_KEYS = ["authorization", "signed_headers", "signature", "canonical_request",
               "string_to_sign", "canonical_uri", "canonical_query", "request_uri",
               "headers_after_signing"]


# ---------------------------------------------------------------------------------------------
# Feeding one vector input to the official signer
# ---------------------------------------------------------------------------------------------

def _recording(base):
    """A subclass of an official signer class that records what the SDK's own methods return.

    Each override calls the SDK method unchanged and only keeps a copy of its result."""

    class Recording(base):
        def __init__(self, credentials):
            super().__init__(credentials)
            self.seen = {}

        def _process_canonical_request(self, request, signed_headers):
            result = super()._process_canonical_request(request, signed_headers)
            self.seen["signed_headers"] = ";".join(signed_headers)
            self.seen["canonical_request"] = result
            return result

        def _process_canonical_uri(self, request):
            result = super()._process_canonical_uri(request)
            self.seen["canonical_uri"] = result
            return result

        def _process_string_to_sign(self, *args, **kwargs):
            result = super()._process_string_to_sign(*args, **kwargs)
            self.seen["string_to_sign"] = result
            return result

        def _sign_string_to_sign(self, string_to_sign, key):
            result = super()._sign_string_to_sign(string_to_sign, key)
            self.seen["signature"] = result
            return result

    Recording.__name__ = "Recording" + base.__name__
    return Recording


SIGNERS = {
    "SDK-HMAC-SHA256": _recording(Signer),
    "SDK-HMAC-SM3": _recording(SM3Signer),
    "V11-HMAC-SHA256": _recording(DerivationAKSKSigner),
}


def split_url(url):
    """'scheme://authority/path?query' -> (scheme, authority, raw path, raw query or None)."""
    scheme, rest = url.split("://", 1)
    cut = len(rest)
    for sep in "/?":
        pos = rest.find(sep)
        if pos != -1:
            cut = min(cut, pos)
    host, rest = rest[:cut], rest[cut:]
    path, sep, query = rest.partition("?")
    return scheme, host, path, (query if sep else None)


def parse_query(query):
    """Raw query string -> list of decoded (key, value) tuples, in wire order (see header)."""
    params = []
    if not query:
        return params
    for segment in query.split("&"):
        if segment == "":
            continue  # empty segment: skipped by convention (not covered by shared vectors)
        key, sep, value = segment.partition("=")
        params.append((unquote(key, errors="replace"), unquote(value, errors="replace")))
    return params


def _wire_text(value):
    """Undo the SDK's 'UTF-8 bytes seen as Latin-1' storage of header values."""
    try:
        return value.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def sign(inp):
    """Sign one vector input with the official SDK and return the output object."""
    scheme, host, path, query = split_url(inp["url"])
    if "query_params" in inp:
        query_params = [tuple(pair) for pair in inp["query_params"]]
    else:
        query_params = parse_query(query)

    headers = OrderedDict(inp.get("headers", {}))
    headers["X-Sdk-Date"] = inp["sdk_date"]
    if inp.get("security_token") is not None:
        headers["X-Security-Token"] = inp["security_token"]

    request = SdkRequest(method=inp["method"], schema=scheme, host=host, resource_path=path,
                         query_params=query_params, header_params=headers,
                         body=inp.get("body"))

    algorithm = inp.get("algorithm", "SDK-HMAC-SHA256")
    signer = SIGNERS[algorithm](BasicCredentials(inp["ak"], inp["sk"]))
    if algorithm == "V11-HMAC-SHA256":
        signer.sign(request, inp["service_name"], inp["region_id"])
    else:
        signer.sign(request)

    seen = signer.seen
    return OrderedDict([
        ("authorization", request.header_params["Authorization"]),
        ("signed_headers", seen["signed_headers"]),
        ("signature", seen["signature"]),
        ("canonical_request", seen["canonical_request"]),
        ("string_to_sign", seen["string_to_sign"]),
        ("canonical_uri", seen["canonical_uri"]),
        ("canonical_query", Signer.process_canonical_query_string(request)),
        ("request_uri", request.uri),
        ("headers_after_signing",
         OrderedDict((k, _wire_text(v)) for k, v in request.header_params.items())),
    ])


def check(path):
    """Re-sign every input of a vector file and compare all output fields exactly."""
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f, object_pairs_hook=OrderedDict)
    failures = 0
    for vector in vectors:
        got = sign(vector["input"])
        for key in OUTPUT_KEYS:
            want = vector["output"][key]
            mine = got[key]
            if key == "headers_after_signing":
                # Order matters too: compare as lists of pairs.
                want, mine = list(want.items()), list(mine.items())
            if want != mine:
                failures += 1
                print("MISMATCH %s %s\n  want %r\n  got  %r" % (vector["name"], key, want, mine),
                      file=sys.stderr)
    print("checked %d vectors x %d fields: %d mismatches"
          % (len(vectors), len(OUTPUT_KEYS), failures), file=sys.stderr)
    return failures == 0


# ---------------------------------------------------------------------------------------------
# Random input generation
# ---------------------------------------------------------------------------------------------

rng = random.Random(SEED)

# Characters an id may contain, as the caller means them (decoded).
ID_PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
ID_SPECIAL = [" ", ":", "@", "!", "*", "(", ")", "'", "+", ",", ";", "=", "$", "&", "~"]
ID_UNICODE = ["é", "中", "文", "😀", "ß", "Ω", "ü", "🚀"]
# Tokens that only make sense on the wire (already percent-encoded).
ID_WIRE_ONLY = {
    "encoded_slash": ["%2F", "%2f"],
    "invalid_utf8": ["%FF", "%C3", "%fe", "%80"],
    "lower_hex": ["%c3%a9", "%e4%b8%ad", "%3a", "%40"],
    "encoded_unreserved": ["%41", "%7E", "%2D", "%5F", "%2E"],
    "encoded_percent": ["%25"],
    "encoded_qmark_hash": ["%3F", "%23"],
}


def pct(byte_values, lower=False):
    fmt = "%%%02x" if lower else "%%%02X"
    return "".join(fmt % b for b in byte_values)


def wire_char(ch, tags):
    """Put one decoded character on the wire, randomly choosing among valid spellings."""
    if ch == " ":
        tags.add("space")
        return "%20"
    if ord(ch) > 0x7F:
        tags.add("unicode")
        return pct(ch.encode("utf-8"), lower=rng.random() < 0.3)
    if ch in ID_SPECIAL:
        tags.add("subdelim")
        # RFC 3986 allows these raw in a path segment; encode them half of the time.
        return ch if rng.random() < 0.5 else pct(ch.encode(), lower=rng.random() < 0.3)
    return ch


def random_id(tags, plain_len=(3, 10)):
    """A path id; usually plain, often with characters that need escaping."""
    n = rng.randint(*plain_len)
    pieces = [rng.choice(ID_PLAIN[:36]) for _ in range(n)]  # lower-case alnum core
    roll = rng.random()
    if roll < 0.35:
        return "".join(pieces)
    out = []
    for p in pieces:
        out.append(wire_char(p, tags))
        if rng.random() < 0.25:
            kind = rng.random()
            if kind < 0.5:
                out.append(wire_char(rng.choice(ID_SPECIAL), tags))
            elif kind < 0.75:
                out.append(wire_char(rng.choice(ID_UNICODE), tags))
            else:
                name = rng.choice(sorted(ID_WIRE_ONLY))
                tags.add(name)
                out.append(rng.choice(ID_WIRE_ONLY[name]))
    return "".join(out)


# (scheme, authority, weight): about 60% default https endpoints without a port.
HOSTS = [
    ("https", "rtc-api.myhuaweicloud.com", 40),
    ("https", "rtc-api.cn-north-4.myhuaweicloud.com", 10),
    ("https", "rtc-api.ap-southeast-1.myhuaweicloud.com", 10),
    ("https", "rtc-api.myhuaweicloud.com:443", 5),
    ("https", "rtc-api.myhuaweicloud.com:8443", 5),
    ("http", "127.0.0.1:18080", 10),
    ("http", "127.0.0.1:8080", 7),
    ("http", "127.0.0.1:%d", 8),  # random port
    ("http", "localhost:9000", 5),
]


def random_host(tags):
    scheme, host, _ = rng.choices(HOSTS, weights=[h[2] for h in HOSTS])[0]
    if "%d" in host:
        host = host % rng.randint(1024, 65535)
    if ":" in host:
        tags.add("port")
    if scheme == "http":
        tags.add("http")
    return scheme, host


# Query values as (raw wire text, tag). Raw text is what goes on the wire.
QUERY_VALUE_KINDS = [
    ("plain", lambda: rng.choice(["ENABLE", "DISABLE", "abc", "room-1", "0", "20", "x.y~z"])),
    ("empty_value", lambda: ""),
    ("plus", lambda: rng.choice(["1+2", "a+b+c", "+"])),
    ("pct20", lambda: rng.choice(["x%20y", "%20lead", "trail%20"])),
    ("pct2B", lambda: rng.choice(["1%2B2", "1%2b2"])),
    ("unicode", lambda: rng.choice(["%E4%B8%AD%E6%96%87", "caf%C3%A9", "caf%c3%a9",
                                    "%F0%9F%98%80", "%C3%BC"])),
    ("invalid_utf8", lambda: rng.choice(["%FF", "a%C3", "%C3%28", "%80x"])),
    ("subdelim", lambda: rng.choice(["a:b", "u@h", "a,b", "x;y", "(1)", "a*", "it's", "$5",
                                     "!x", "a/b", "a?b", "%26amp", "%3D"])),
    ("value_with_eq", lambda: rng.choice(["b=c", "=", "a==b"])),
    ("number", lambda: str(rng.choice([0, 1, 2, 9, 10, 11, 99, 100, 1000]))),
    ("time", lambda: rng.choice(["2024-01-02T03:04:05Z", "2024-01-02T03%3A04%3A05Z",
                                 "1704164645", "2024-01-02"])),
]

EXTRA_KEYS = ["a", "b", "A", "B", "a.b", "a~b", "a-b", "a_b", "_x", "~t", "Z", "z", "ab", "a%2Fb",
              "k%C3%A9y", "%E4%B8%AD", "%F0%9F%98%80", "%EF%BF%BD", "%FF"]


def random_query(op, tags):
    """Build a raw query string (no empty segments). Returns None for 'no query'."""
    segs = []
    op_keys = list(op["query_params"])
    if op_keys and rng.random() < 0.8:
        for key in rng.sample(op_keys, rng.randint(1, len(op_keys))):
            kind, make = rng.choice(QUERY_VALUE_KINDS[:1] * 4 + QUERY_VALUE_KINDS)
            if kind != "plain":
                tags.add("query_" + kind)
            segs.append((key, make()))
    if rng.random() < (0.5 if segs else 0.3):
        feature = rng.choice(["repeated", "no_eq", "case", "numeric_sort", "punct_keys",
                              "unicode_keys", "mixed"])
        tags.add("query_" + {"repeated": "repeated_keys", "no_eq": "key_without_eq",
                             "case": "keys_differ_in_case", "numeric_sort": "9_vs_10",
                             "punct_keys": "punct_keys", "unicode_keys": "unicode_keys",
                             "mixed": "mixed"}[feature])
        if feature == "repeated":
            key = rng.choice(op_keys or ["app", "a"])
            for _ in range(rng.randint(2, 4)):
                segs.append((key, rng.choice(QUERY_VALUE_KINDS)[1]()))
        elif feature == "no_eq":
            segs.append((rng.choice(["flag", "verbose", "a", "x"]), None))
            if rng.random() < 0.5:
                segs.append(("empty", ""))
        elif feature == "case":
            segs += [("a", "1"), ("A", "2"), ("Limit", "3"), ("limit", "4")][: rng.randint(2, 4)]
        elif feature == "numeric_sort":
            key = rng.choice(["limit", "offset", "n"])
            for v in rng.sample(["9", "10", "1", "100", "09", "2"], rng.randint(2, 4)):
                segs.append((key, v))
        elif feature == "punct_keys":
            for key in rng.sample(["a.b", "a~b", "a-b", "a_b", "a", "ab", "a%2Eb", "a%7Eb"],
                                  rng.randint(2, 5)):
                segs.append((key, rng.choice(["1", "2", ""])))
        elif feature == "unicode_keys":
            for key in rng.sample(["k%C3%A9y", "%E4%B8%AD", "%F0%9F%98%80", "%EF%BF%BD", "%EE%80%80",
                                   "z", "%ff"], rng.randint(2, 4)):
                segs.append((key, rng.choice(["1", "v", "%F0%9F%9A%80"])))
        else:
            for _ in range(rng.randint(2, 5)):
                key = rng.choice(EXTRA_KEYS)
                value = None if rng.random() < 0.15 else rng.choice(QUERY_VALUE_KINDS)[1]()
                segs.append((key, value))
    if not segs:
        return None
    if rng.random() < 0.5:
        rng.shuffle(segs)
    return "&".join(k if v is None else "%s=%s" % (k, v) for k, v in segs)


def random_case(name):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


CONTENT_TYPES = [
    ("Content-Type", "application/json", None),
    ("Content-Type", "application/json", None),
    ("Content-Type", "application/json;charset=utf-8", None),
    ("Content-Type", "application/json;charset=utf-8", None),
    ("Content-Type", "application/json; charset=UTF-8", "ct_json_charset_space"),
    ("Content-Type", "application/bson", "ct_bson"),
    ("Content-Type", "text/plain", "ct_text_plain"),
    ("Content-Type", "text/plain; charset=utf-8", "ct_text_plain"),
    ("Content-Type", "application/octet-stream", "ct_octet_stream"),
    ("Content-Type", " application/json", "ct_leading_space"),
    ("Content-Type", "application/json  ", "ct_trailing_space"),
    ("content-type", "application/json", "ct_lowercase_key"),
    ("content-type", "application/octet-stream", "ct_lowercase_key_octet"),
    ("Content-Type", "multipart/form-data; boundary=xyz", "ct_multipart"),
]

CUSTOM_HEADERS = [
    ("X-Request-Id", lambda: "req-%08x" % rng.getrandbits(32), None),
    ("X-Custom-Hdr", lambda: rng.choice(["  padded  ", "\tTabbed\t", " \t mixed \t "]), "hdr_trim"),
    ("X-Inner-Space", lambda: rng.choice(["a  b", "a\tb", "a \t b   c"]), "hdr_inner_ws"),
    ("X-Utf8", lambda: rng.choice(["中文", "Grüße", "café", "😀 ok", "  日本語  "]), "hdr_nonascii"),
    ("X_Trace_Id", lambda: "trace-%04d" % rng.randint(0, 9999), "hdr_underscore"),
    ("x_not_signed", lambda: "zzz", "hdr_underscore"),
    ("User-Agent", lambda: "huaweicloud-usdk-python/3.0; os/Linux python/3.11.7", "hdr_user_agent"),
    ("Accept", lambda: rng.choice(["application/json", "*/*"]), None),
    ("X-Empty", lambda: "", "hdr_empty_value"),
    ("X-Language", lambda: rng.choice(["en-us", "zh-cn"]), None),
    ("X-Number", lambda: str(rng.randint(0, 10 ** 6)), None),
]

BODIES_JSON_ASCII = [
    '{"user_ids": ["user001", "user002"]}',
    '{"app_name":"x"}',
    '{"name":"rule-1","obs_addr":{"location":"cn-north-4","bucket":"b","object":"o"}}',
    '{"enable":true,"limit":10}',
    '{\n  "a": 1,\n  "b": [1, 2, 3]\n}\n',
    '{"mode":"AUTO_RECORD_ON","record_rule_id":"r-1"}',
]
BODIES_JSON_UTF8 = [
    '{"app_name":"测试应用"}',
    '{"nickname":"José 😀","room":"中文房间"}',
    '{"note":"Grüße, naïve café"}',
]
BODIES_BINARY_ASCII = [
    "raw-bytes",
    "PK\u0003\u0004\u0014\u0000\u0008\u0000",
    "\u0000\u0001\u0002\u007f binary-ish \r\n\t",
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "a=1&b=2",
    "line1\nline2\n",
]


def random_body(has_body, tags):
    """Returns (present, body). Operations with a body usually get JSON."""
    if not has_body and rng.random() < 0.8:
        choice = rng.random()
        if choice < 0.4:
            return False, None
        return True, ""
    roll = rng.random()
    if roll < 0.12:
        tags.add("body_empty")
        return True, ""
    if roll < 0.62:
        tags.add("body_json")
        return True, rng.choice(BODIES_JSON_ASCII)
    if roll < 0.82:
        tags.add("body_utf8_json")
        return True, rng.choice(BODIES_JSON_UTF8)
    tags.add("body_binaryish")
    return True, rng.choice(BODIES_BINARY_ASCII)


def random_headers(algorithm, has_body_value, tags):
    headers = OrderedDict()
    used = set()

    def add(name, value):
        if name.lower() in used:  # never two names equal ignoring case (see edge vectors)
            return
        used.add(name.lower())
        headers[name] = value

    items = []
    if rng.random() < 0.85:
        name, value, tag = rng.choice(CONTENT_TYPES)
        if tag:
            tags.add(tag)
        items.append((name, value))
    if rng.random() < 0.7:
        tags.add("project_id")
        name = "X-Project-Id" if rng.random() < 0.8 else random_case("X-Project-Id")
        if name != "X-Project-Id":
            tags.add("hdr_random_case")
        items.append((name, PROJECT_ID))
    for name, make, tag in rng.sample(CUSTOM_HEADERS, rng.choice([0, 0, 1, 1, 2, 3])):
        if tag:
            tags.add(tag)
        if rng.random() < 0.3:
            name = random_case(name)
            tags.add("hdr_random_case")
        items.append((name, make()))
    if rng.random() < 0.15:
        # Explicit payload override, spelled exactly as the signer spells it so it is one header.
        override = "X-Sdk-Content-Sm3" if algorithm == "SDK-HMAC-SM3" else "X-Sdk-Content-Sha256"
        tags.add("unsigned_payload_" + ("with_body" if has_body_value else "no_body"))
        items.append((override, "UNSIGNED-PAYLOAD"))
    if rng.random() < 0.5:
        rng.shuffle(items)
    for name, value in items:
        add(name, value)
    return headers


def op_slug(op):
    return op["python_method"]


def fill_path(op, tags):
    """Replace {params} with ids (raw wire form) and maybe add a trailing slash."""
    path = op["path"]
    for param in op["path_params"]:
        if param == "project_id" and rng.random() < 0.7:
            value = PROJECT_ID
        else:
            value = random_id(tags)
        path = path.replace("{%s}" % param, value)
    if rng.random() < 0.2:
        path += "/"
        tags.add("trailing_slash")
    return path


DATES = [DEFAULT_DATE] * 6 + ["20251231T235959Z", "20240229T120000Z", "20300101T000000Z",
                              "20231015T081530Z"]
REGIONS = ["cn-north-4", "cn-east-3", "ap-southeast-1", "cn-south-1"]


def random_credentials(tags):
    if rng.random() < 0.9:
        return DEFAULT_AK, DEFAULT_SK
    tags.add("random_aksk")
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ak = "".join(rng.choice(alnum) for _ in range(20))
    sk = "".join(rng.choice(alnum + "abcdefghijklmnopqrstuvwxyz") for _ in range(40))
    return ak, sk


def random_case_input(op):
    """One random vector input plus its descriptive tags."""
    tags = set()
    roll = rng.random()
    algorithm = "SDK-HMAC-SHA256"
    if roll >= 0.85:
        algorithm = "SDK-HMAC-SM3" if roll < 0.925 else "V11-HMAC-SHA256"
        tags.add("sm3" if algorithm == "SDK-HMAC-SM3" else "v11")

    method = op["http_method"]
    if rng.random() < 0.15:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
        if method != op["http_method"]:
            tags.add("method_" + method.lower())

    scheme, host = random_host(tags)
    path = fill_path(op, tags)
    use_query_params = rng.random() < 0.04
    query = None if use_query_params else random_query(op, tags)

    body_present, body = random_body(op["has_body"] or method in ("POST", "PUT", "PATCH") and
                                     rng.random() < 0.3, tags)
    headers = random_headers(algorithm, bool(body), tags)

    ak, sk = random_credentials(tags)
    sdk_date = rng.choice(DATES)
    if sdk_date != DEFAULT_DATE:
        tags.add("date_" + sdk_date[:8])

    inp = OrderedDict()
    inp["ak"] = ak
    inp["sk"] = sk
    inp["sdk_date"] = sdk_date
    inp["method"] = method
    inp["url"] = "%s://%s%s%s" % (scheme, host, path, "" if query is None else "?" + query)
    if use_query_params:
        tags.add("query_params_typed")
        pairs = [["limit", rng.choice([1, 9, 10, 100])], ["offset", rng.choice([0, 10])],
                 ["verbose", rng.choice([True, False])], ["state", "ENABLE"],
                 ["room_id", "r %s/中" % rng.randint(0, 9)]]
        inp["query_params"] = rng.sample(pairs, rng.randint(1, len(pairs)))
    inp["headers"] = headers
    if body_present:
        inp["body"] = body
    if rng.random() < 0.12:
        tags.add("security_token")
        inp["security_token"] = rng.choice([
            "STS-TOKEN-EXAMPLE",
            "gQpjbi1ub3J0aC00jB8ZXlKaGJHY2lPaUpTVXpJMU5pSjkuZXlK+/=",
            "tok-%016x" % rng.getrandbits(64),
        ])
    if algorithm != "SDK-HMAC-SHA256":
        inp["algorithm"] = algorithm
        if algorithm == "V11-HMAC-SHA256":
            inp["region_id"] = rng.choice(REGIONS)
            inp["service_name"] = rng.choice(["CloudRTC", "CloudRTC", "rtc"])
    return inp, tags


# Tag priority for names: the most specific features first.
TAG_ORDER = [
    "sm3", "v11", "encoded_slash", "invalid_utf8", "lower_hex", "encoded_unreserved",
    "encoded_percent", "encoded_qmark_hash", "unicode", "space", "subdelim", "trailing_slash",
    "query_repeated_keys", "query_key_without_eq", "query_keys_differ_in_case", "query_9_vs_10",
    "query_punct_keys", "query_unicode_keys", "query_mixed", "query_params_typed",
    "query_plus", "query_pct20", "query_pct2B", "query_unicode", "query_invalid_utf8",
    "query_subdelim", "query_value_with_eq", "query_empty_value", "query_number", "query_time",
    "unsigned_payload_with_body", "unsigned_payload_no_body", "security_token",
    "ct_leading_space", "ct_trailing_space", "ct_lowercase_key", "ct_lowercase_key_octet",
    "ct_text_plain", "ct_octet_stream", "ct_bson", "ct_multipart", "ct_json_charset_space",
    "hdr_underscore", "hdr_nonascii", "hdr_trim", "hdr_inner_ws", "hdr_random_case",
    "hdr_empty_value", "hdr_user_agent", "body_utf8_json", "body_binaryish", "body_json",
    "body_empty", "method_get", "method_post", "method_put", "method_delete", "method_patch",
    "http", "port", "random_aksk",
]


def describe(index, op, tags):
    ordered = [t for t in TAG_ORDER if t in tags]
    ordered += sorted(t for t in tags if t not in TAG_ORDER)
    return "rand_%04d_%s%s" % (index, op_slug(op),
                                "".join("_" + t for t in ordered[:5]) or "_basic")


# ---------------------------------------------------------------------------------------------
# Hand-written edge cases (SDK quirks worth pinning down)
# ---------------------------------------------------------------------------------------------

def edge_inputs():
    base_url = "https://rtc-api.myhuaweicloud.com/v2/apps/app-123"

    def mk(name, method="POST", url=base_url, headers=None, body=None, **extra):
        inp = OrderedDict([("ak", DEFAULT_AK), ("sk", DEFAULT_SK), ("sdk_date", DEFAULT_DATE),
                           ("method", method), ("url", url)])
        if "query_params" in extra:
            inp["query_params"] = extra.pop("query_params")
        inp["headers"] = OrderedDict(headers or [])
        if body is not None:
            inp["body"] = body
        inp.update(extra)
        return name, inp

    json_body = '{"app_name":"x"}'
    return [
        # Two names equal ignoring case: both lower-cased names are listed in SignedHeaders,
        # and both canonical lines carry the LAST value.
        mk("edge_01_duplicate_header_names_differing_in_case",
           headers=[("X-Custom", "first"), ("x-custom", "second")], body=json_body),
        # Non-JSON Content-Type makes the signer add "X-Sdk-Content-Sha256"; a caller's
        # lower-case "x-sdk-content-sha256" stays as a second header with the same name.
        mk("edge_02_lowercase_unsigned_header_plus_auto_added_one",
           headers=[("Content-Type", "text/plain"), ("x-sdk-content-sha256", "UNSIGNED-PAYLOAD")],
           body="hello"),
        # Whitespace-only value: trimmed to "" and still signed ("x-blank:").
        mk("edge_03_whitespace_only_header_value",
           headers=[("Content-Type", "application/json"), ("X-Blank", " \t  ")], body=json_body),
        # Whitespace-only override header: trimmed to "" which is falsy, so the body is hashed.
        mk("edge_04_whitespace_only_content_sha256_hashes_body",
           headers=[("Content-Type", "application/json"), ("X-Sdk-Content-Sha256", "   ")],
           body=json_body),
        # Override with spaces around it: trimmed before it replaces the payload hash.
        mk("edge_05_padded_unsigned_payload_value_trimmed",
           headers=[("Content-Type", "application/json"),
                    ("X-Sdk-Content-Sha256", "  UNSIGNED-PAYLOAD\t")], body=json_body),
        # Non-ASCII override: the canonical header line shows the text, but the payload line
        # shows its UTF-8 bytes read as Latin-1 (the SDK rewrote the header before hashing).
        mk("edge_06_nonascii_content_sha256_value_mojibake_in_payload_line",
           headers=[("Content-Type", "application/json"), ("X-Sdk-Content-Sha256", "é-中")],
           body=json_body),
        # Any override value is used verbatim, not only UNSIGNED-PAYLOAD.
        mk("edge_07_arbitrary_content_sha256_value_used_verbatim",
           headers=[("Content-Type", "application/json"),
                    ("X-Sdk-Content-Sha256", "0000000000000000000000000000000000000000000000000000000000000000")],
           body=json_body),
        # Override header with an empty body: the empty-body hash wins, header still signed.
        mk("edge_08_unsigned_payload_header_with_empty_body",
           headers=[("Content-Type", "application/json"), ("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD")],
           body=""),
        # Method is upper-cased in the canonical request only.
        mk("edge_09_lowercase_method", method="post",
           headers=[("Content-Type", "application/json")], body=json_body),
        # A caller-supplied Host (any case) is kept and signed instead of the URL authority.
        mk("edge_10_caller_host_header_kept",
           method="GET", headers=[("host", "other.example.com")]),
        # A stale Authorization header is signed like any other, then overwritten.
        mk("edge_11_stale_authorization_header_is_signed_then_replaced",
           method="GET", headers=[("Authorization", "Bearer stale")]),
        # The prefix test is case-sensitive and a plain startswith.
        mk("edge_12_content_type_uppercase_json_gets_unsigned",
           headers=[("Content-Type", "Application/JSON")], body=json_body),
        mk("edge_13_content_type_jsonx_prefix_counts_as_json",
           headers=[("Content-Type", "application/jsonx")], body=json_body),
        # Stray '%' not followed by two hex digits stays literal and is re-encoded as %25.
        mk("edge_14_stray_percent_in_path_and_query", method="GET",
           url="https://rtc-api.myhuaweicloud.com/v2/apps/50%zz/x%2?p=50%&q=%g1"),
        # No path normalisation: empty and dot segments are kept.
        mk("edge_15_empty_and_dot_segments_kept", method="GET",
           url="https://rtc-api.myhuaweicloud.com/v2/apps//app-1/./rooms/../x"),
        # Python's str.strip() also removes Unicode spaces (NBSP, ideographic space).
        mk("edge_16_unicode_whitespace_trimmed_from_value", method="GET",
           headers=[("X-Nbsp", "\u00a0value\u3000")]),
        # Value containing '=' after the first one.
        mk("edge_17_query_value_contains_equals", method="GET",
           url="https://rtc-api.myhuaweicloud.com/v2/apps?a=b=c&d==&e"),
        # Sorting is by code point: U+E000, U+FFFD and an emoji (astral) in one key position.
        mk("edge_18_query_sort_code_points_astral_vs_bmp", method="GET",
           url="https://rtc-api.myhuaweicloud.com/v2/apps?k=%F0%9F%98%80&k=%EF%BF%BD&k=%EE%80%80&k=%FF"),
        # SM3 with a non-JSON content type: the auto header is X-Sdk-Content-Sm3.
        mk("edge_19_sm3_octet_stream_auto_unsigned",
           headers=[("Content-Type", "application/octet-stream")], body="raw-bytes",
           algorithm="SDK-HMAC-SM3"),
        # SM3 ignores X-Sdk-Content-Sha256 for the payload (it is only a signed header).
        mk("edge_20_sm3_ignores_sha256_override",
           headers=[("Content-Type", "application/json"), ("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD")],
           body=json_body, algorithm="SDK-HMAC-SM3"),
        # V11 with a non-JSON content type and a security token.
        mk("edge_21_v11_text_plain_security_token",
           headers=[("Content-Type", "text/plain"), ("X-Project-Id", PROJECT_ID)], body="hello",
           security_token="STS-TOKEN-EXAMPLE", algorithm="V11-HMAC-SHA256",
           region_id="cn-east-3", service_name="CloudRTC"),
        # Typed query_params: list order does not matter, booleans print lower-case.
        mk("edge_22_typed_query_params_bool_false_and_zero", method="GET",
           url="https://rtc-api.myhuaweicloud.com/v2/apps",
           query_params=[["verbose", False], ["offset", 0], ["limit", 100]]),
    ]


# Inputs offered on purpose to see which kinds the SDK rejects (they are skipped).
def raising_inputs():
    base = OrderedDict([("ak", DEFAULT_AK), ("sk", DEFAULT_SK), ("sdk_date", DEFAULT_DATE),
                        ("method", "GET")])
    out = []
    for kind, url, extra in [
        ("url_without_path", "https://rtc-api.myhuaweicloud.com", {}),
        ("url_without_path", "https://rtc-api.myhuaweicloud.com?x=1", {}),
        ("query_params_mixed_types_same_key", "https://rtc-api.myhuaweicloud.com/v2/apps",
         {"query_params": [["limit", 10], ["limit", "x"]]}),
    ]:
        inp = OrderedDict(base)
        inp["url"] = url
        inp.update(extra)
        inp["headers"] = OrderedDict()
        out.append((kind, inp))
    return out


def load_operations():
    """The embedded operation table as dicts; cross-checked with the spec file if present."""
    operations = [{"python_method": name, "http_method": method, "path": path,
                   "path_params": re.findall(r"{(\w+)}", path),
                   "query_params": query.split(), "has_body": has_body}
                  for name, method, path, query, has_body in OPERATIONS_TABLE]
    if os.path.exists(OPERATIONS_FILE):
        with open(OPERATIONS_FILE, encoding="utf-8") as f:
            spec = json.load(f)
        keys = ["python_method", "http_method", "path", "path_params", "query_params", "has_body"]
        if [{k: op[k] for k in keys} for op in spec] != operations:
            print("warning: OPERATIONS_TABLE differs from %s" % OPERATIONS_FILE, file=sys.stderr)
    return operations


def generate():
    operations = load_operations()

    vectors = []
    names = set()
    raised = Counter()
    feature_counts = Counter()  # how often each feature tag was drawn (printed on stderr)

    def try_add(name, inp, kind):
        try:
            output = sign(inp)
        except Exception as exc:  # the SDK refused this input: skip it, remember the kind
            raised["%s: %s" % (kind, type(exc).__name__)] += 1
            return
        assert name not in names, name
        names.add(name)
        vectors.append(OrderedDict([("name", name), ("input", inp), ("output", output)]))

    # Operations are visited round-robin so every one of the 42 paths is used several times.
    for index in range(N_RANDOM):
        op = operations[index % len(operations)]
        inp, tags = random_case_input(op)
        feature_counts.update(tags)
        try_add(describe(index, op, tags), inp, "random")
    for name, inp in edge_inputs():
        try_add(name, inp, name)
    for kind, inp in raising_inputs():
        try_add("skipped_" + kind, inp, kind)

    for tag, count in sorted(feature_counts.items()):
        print("feature %-40s x%d" % (tag, count), file=sys.stderr)
    for kind, count in sorted(raised.items()):
        print("skipped (SDK raised) %-50s x%d" % (kind, count), file=sys.stderr)
    print("generated %d vectors" % len(vectors), file=sys.stderr)
    return vectors


def main(argv):
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    if len(argv) == 3 and argv[1] == "--check":
        return 0 if check(argv[2]) else 1
    if len(argv) != 1:
        print("usage: %s [--check VECTORS.json]" % argv[0], file=sys.stderr)
        return 2
    vectors = generate()
    sys.stdout.write(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
