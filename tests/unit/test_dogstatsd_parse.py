"""The DogStatsD parser: every message form the Datadog Agent's parser reads (its parse tests'
corners), the datagrams the official ``datadog`` client writes, and every refusal with its reason."""

from __future__ import annotations

import socket

import pytest
from datadog.dogstatsd import DogStatsd

from integrations.datadog.dogstatsd import (
    ERROR_REASONS,
    MAX_NAME,
    MAX_TAG,
    MIN_SAMPLE_RATE,
    Event,
    Sample,
    ServiceCheck,
    parse_datagram,
)


def one(data: bytes, max_tags: int = 100) -> Sample:
    p = parse_datagram(data, max_tags)
    assert p.errors == [] and p.events == [] and p.service_checks == [], p
    assert len(p.samples) == 1, p.samples
    return p.samples[0]


def refused(data: bytes, max_tags: int = 100) -> str:
    p = parse_datagram(data, max_tags)
    assert p.samples == [] and p.events == [] and p.service_checks == [], p
    assert len(p.errors) == 1, p.errors
    reason, excerpt = p.errors[0]
    assert reason in ERROR_REASONS
    assert excerpt == data.rstrip(b"\r\n")[:64]
    return reason


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("text, kind, values", [
    (b"daemon:666|g", "g", (666.0,)),
    (b"daemon:21|c", "c", (21.0,)),
    (b"daemon:21|h", "h", (21.0,)),
    (b"daemon:21|ms", "ms", (21.0,)),
    (b"daemon:3.5|d", "d", (3.5,)),
    (b"daemon:abc|s", "s", ("abc",)),
    (b"daemon:-1.5e3|g", "g", (-1500.0,)),
    (b"daemon:+2|c", "c", (2.0,)),
    (b"daemon:.5|h", "h", (0.5,)),
])
def test_every_type(text, kind, values):
    s = one(text)
    assert s == Sample("daemon", kind, values, 1.0, (), None, None)


@pytest.mark.parametrize("text, kind, values", [
    (b"daemon:666:777|g", "g", (666.0, 777.0)),
    (b"daemon:666:777|c", "c", (666.0, 777.0)),
    (b"daemon:21:22|h", "h", (21.0, 22.0)),
    (b"daemon:21:22|ms", "ms", (21.0, 22.0)),
    (b"daemon:3.5:4.5|d", "d", (3.5, 4.5)),
    (b"daemon:1.1234::41|d", "d", (1.1234, 41.0)),  # empty values skipped, as the Agent does
    (b"daemon::1.1234::41:|d", "d", (1.1234, 41.0)),
    (b"daemon:abc:def|s", "s", ("abc:def",)),  # a set's value keeps its colons
])
def test_several_values_in_one_message(text, kind, values):
    assert one(text).values == values and one(text).kind == kind


def test_unicode_names_tags_and_set_members():
    s = one("♬†øU†øU¥ºuT0♪:666|g|#intitulé:T0µ".encode())
    assert (s.name, s.tags) == ("♬†øU†øU¥ºuT0♪", ("intitulé:T0µ",))
    assert one("daemon:♬†øU†øU¥ºuT0♪|s".encode()).values == ("♬†øU†øU¥ºuT0♪",)


def test_tags():
    assert one(b"custom_counter:1|c|#protocol:http,bench").tags == ("protocol:http", "bench")
    assert one(b"daemon:666|g|#sometag1:somevalue1,sometag2:somevalue2").tags == \
        ("sometag1:somevalue1", "sometag2:somevalue2")
    assert one(b"daemon:666|g|#").tags == ()
    assert one(b"daemon:666|g|#a,,b,").tags == ("a", "b")  # empty tags dropped
    assert one(b"daemon:666|g|#a:1|#b:2").tags == ("b:2",)  # the last field counts
    assert one(b"daemon:666|g|#k:v:w").tags == ("k:v:w",)
    assert one(b"x:1|c|#" + b",".join(b"t%d" % i for i in range(100))).tags[-1] == "t99"


def test_tags_repeated_are_the_same_with_any_max_tags():
    assert one(b"x:1|c|#a,b,c", max_tags=3).tags == ("a", "b", "c")
    assert refused(b"x:1|c|#a,b,c", max_tags=2) == "too_many_tags"  # remembered under 3, refused under 2
    assert one(b"x:1|c|#a,b,c", max_tags=5).tags == ("a", "b", "c")


def test_sample_rate():
    assert one(b"daemon:666|g|@0.21").sample_rate == 0.21
    assert one(b"daemon:666|c|@1").sample_rate == 1.0
    assert one(b"daemon:666|c|@1.000000").sample_rate == 1.0
    assert one(b"daemon:666|c|@0.1|@0.5").sample_rate == 0.5
    assert one(b"daemon:666|c|@1e-9").sample_rate == MIN_SAMPLE_RATE


def test_timestamp_in_any_order_with_the_other_fields():
    for text in (b"metric:1234|g|#onetag|T1657100430", b"metric:1234|g|T1657100430|#onetag",
                 b"metric:1234|g|@0.21|T1657100430|#onetag", b"metric:1234|g|T1657100430|@0.21|#onetag",
                 b"metric:1234|g|#onetag|T1657100430|@0.21", b"metric:1234|g|@0.21|#onetag|T1657100430"):
        s = one(text)
        assert (s.name, s.values, s.tags, s.timestamp) == ("metric", (1234.0,), ("onetag",), 1657100430.0)
        assert s.sample_rate == (0.21 if b"@" in text else 1.0)
    assert one(b"metric:1234|g|#|T1657100430") == Sample("metric", "g", (1234.0,), 1.0, (), 1657100430.0, None)
    assert one(b"metric:1|c|T+12").timestamp == 12.0


def test_container_and_extension_fields():
    cid = "2a25f7fc8fbf573d62053d7263dd2d440c07b6ab4d2b107e50b0d4df1f2ee15f"
    s = one(f"example.metric:2.39283|d|@1.000000|#environment:dev|c:{cid}".encode())
    assert s == Sample("example.metric", "d", (2.39283,), 1.0, ("environment:dev",), None, cid)
    s = one(f"example.metric:2.39283|d|T1657100540|@1.000000|#environment:dev|c:{cid}|f:wowthisisacoolfeature|"
            "f2:omgthisoneiscooler|e:it-false,cn-x|card:high".encode())
    assert (s.timestamp, s.tags, s.container) == (1657100540.0, ("environment:dev",), cid)
    assert one(b"metric:1234|g|c:ci-1234567890abcdef").container == "ci-1234567890abcdef"
    assert one(b"daemon:666|g|m:test").tags == ()  # unknown fields ignored
    assert one(b"daemon:666|g||||").values == (666.0,)  # empty fields ignored
    assert one(b"daemon:666|g|card:low|cx").container is None  # only c: is the container


def test_several_messages_in_one_datagram_bad_ones_alone():
    p = parse_datagram(b"a:1|c\nb:2|g\r\n\n\nbad\nc:x|c\n_e{1,1}:t|x\n_sc|s|2\n  \nd:3|ms\n")
    assert [(s.name, s.values) for s in p.samples] == [("a", (1.0,)), ("b", (2.0,)), ("d", (3.0,))]
    assert [e.title for e in p.events] == ["t"] and [c.name for c in p.service_checks] == ["s"]
    assert p.errors == [("bad_format", b"bad"), ("bad_value", b"c:x|c"), ("bad_format", b"  ")]


def test_a_message_of_invalid_utf8_is_refused_its_neighbours_kept():
    p = parse_datagram(b"a:1|c\nb\xff:2|c\nc:3|c\n_e{2,1}:\xc3\xa9|x")
    assert [s.name for s in p.samples] == ["a", "c"]
    assert p.events == [Event("é", "x", None, None, None, "normal", None, "info", ())]
    assert p.errors == [("not_utf8", b"b\xff:2|c")]


def test_empty_datagrams():
    for data in (b"", b"\n", b"\r\n\n", b"\n\n\n"):
        assert parse_datagram(data).errors == [("empty", data)]


@pytest.mark.parametrize("text, reason", [
    (b"daemon:666", "bad_format"),  # the Agent's "not enough information"
    (b"daemon:666|", "bad_type"),
    (b"daemon:|g", "bad_value"),
    (b":666|g", "bad_name"),
    (b"abc666|g", "bad_format"),
    (b"daemon:abc|g", "bad_value"),
    (b"daemon:666|unknown", "bad_type"),
    (b"daemon:666|G", "bad_type"),
    (b"daemon:666|g|@abc", "bad_sample_rate"),
    (b"daemon:666|g|@0", "bad_sample_rate"),
    (b"daemon:666|g|@-0.5", "bad_sample_rate"),
    (b"daemon:666|g|@1.5", "bad_sample_rate"),
    (b"daemon:666|g|@nan", "bad_sample_rate"),
    (b"daemon:666|g|@1e-10", "bad_sample_rate"),  # below MIN_SAMPLE_RATE: a weight of 1e10
    (b"daemon:666|g|@5e-324", "bad_sample_rate"),
    (b"daemon:666|g|@", "bad_sample_rate"),
    (b"metric:1234|g|#onetag|TABCD", "bad_timestamp"),
    (b"metric:1234|g|#onetag|T", "bad_timestamp"),
    (b"metric:1234|g|#onetag|T-102348932", "bad_timestamp"),
    (b"metric:1234|g|T0", "bad_timestamp"),
    (b"metric:1234|g|T1.5", "bad_timestamp"),
    (b"metric:1234|g|T" + b"9" * 13, "bad_timestamp"),
    ("metric:1|g|T١٢".encode(), "bad_timestamp"),  # digits, but not ASCII ones
    (b"daemon:NaN|g", "bad_value"),
    (b"daemon:inf|g", "bad_value"),
    (b"daemon:-Infinity|c", "bad_value"),
    (b"daemon:1e999|g", "bad_value"),
    (b"daemon:1_000|c", "bad_value"),
    (b"daemon: 1|c", "bad_value"),
    (b"daemon:1 |c", "bad_value"),
    (b"daemon:0x10|c", "bad_value"),
    ("daemon:١|c".encode(), "bad_value"),  # float() would read an Arabic-Indic one
    (b"daemon:1:x|d", "bad_value"),
    (b"daemon::::|d", "bad_value"),
    (b"dae mon:1|c", "bad_name"),
    (b"dae\x01mon:1|c", "bad_name"),
    (b"d" * (MAX_NAME + 1) + b":1|c", "bad_name"),
    (b"x:1|c|#" + b"t" * (MAX_TAG + 1), "bad_tag"),
    (b"x:1|c|#a," + b"t" * (MAX_TAG + 1) + b",b", "bad_tag"),
    (b"x:1|c|#" + b",".join(b"t%d" % i for i in range(101)), "too_many_tags"),
    (b"_e:title|text", "bad_type"),  # not an event: a metric "_e" of the type "text"
])
def test_each_malformed_metric_with_its_reason(text, reason):
    assert refused(text) == reason


def test_bounds_hold_at_their_limits():
    assert one(b"d" * MAX_NAME + b":1|c").name == "d" * MAX_NAME
    assert one(b"x:1|c|#" + b"t" * MAX_TAG).tags == ("t" * MAX_TAG,)
    assert len(one(b"x:1|c|#" + b",".join(b"t%d" % i for i in range(5)), max_tags=5).tags) == 5
    assert refused(b"x:1|c|#" + b",".join(b"t%d" % i for i in range(6)), max_tags=5) == "too_many_tags"
    assert len(one(b"x:1|c|#" + b",,," * 200 + b"a,b", max_tags=5).tags) == 2  # empty ones do not count


def test_a_long_error_line_is_excerpted_to_64_bytes():
    p = parse_datagram(b"x" * 1000 + b"\n" + "é".encode() * 40 + b"\n")
    assert p.errors == [("bad_format", b"x" * 64), ("bad_format", "é".encode() * 32)]


# --------------------------------------------------------------------------- events


def event(data: bytes) -> Event:
    p = parse_datagram(data)
    assert p.errors == [] and len(p.events) == 1, p
    return p.events[0]


def test_event_minimal_and_every_field():
    assert event(b"_e{10,9}:test title|test text") == \
        Event("test title", "test text", None, None, None, "normal", None, "info", ())
    e = event(b"_e{10,9}:test title|test text|t:warning|d:12345|p:low|h:some.host|k:aggKey|s:source test"
              b"|#tag1,tag2:test|c:cid|card:high")
    assert e == Event("test title", "test text", 12345.0, "some.host", "aggKey", "low", "source test", "warning",
                      ("tag1", "tag2:test"), "cid")
    for t in ("error", "warning", "info", "success"):
        assert event(f"_e{{1,1}}:a|b|t:{t}".encode()).alert_type == t


def test_event_text_and_title():
    assert event(b"_e{10,24}:test title|test\\line1\\nline2\\nline3").text == "test\\line1\nline2\nline3"
    assert event(b"_e{10,24}:test|title|test\\line1\\nline2\\nline3").title == "test|title"  # '|' in a title
    assert event(b"_e{10,0}:test title|").text == ""
    assert event(b"_e{10,0}:test title||t:warning").alert_type == "warning"
    assert event(b"_e{6,1}:a\\nb|c|d|x:1")[:2] == ("a\nb|c", "d")
    # lengths count UTF-8 bytes, as the clients write them
    assert event("_e{6,4}:héllo|wör|#a".encode()) == \
        Event("héllo", "wör", None, None, None, "normal", None, "info", ("a",))
    assert event("_e{4,3}:héllo|wör".encode())[:2] == ("hél", "o|w")  # as counted, whatever the bytes hold


def test_event_bad_optional_fields_are_skipped_the_event_kept():
    for text in (b"_e{5,4}:title|text|d:abc", b"_e{5,4}:title|text|p:urgent", b"_e{5,4}:title|text|t:test",
                 b"_e{5,4}:title|text|x:1234", b"_e{5,4}:title|text|d:-5"):
        assert event(text) == Event("title", "text", None, None, None, "normal", None, "info", ())
    assert event(b"_e{5,4}:title|text|p:low|p:urgent").priority == "low"


@pytest.mark.parametrize("text", [
    b"_e{10,10}:title|text", b"_e{0,0}:a|a", b"_e{0,4}:text", b"_e{5555:title|text", b"_e{a,1}:title|text",
    b"_e{1,a}:title|text", b"_e{5,}:title|text", b"_e{,4}:title|text", b"_e{}:title|text", b"_e{,}:title|text",
    b"_e{-123,-987}:", b"_e{5,-987}:title", b"_e{0001,-9876", b"_e{0,9}:|test text", b"_e{1,1}",
    b"_e{1,1}x:a|b", b"_e{9999999999,1}:a|b", "_e{1,2}:é|x".encode(),  # a length cutting a character
    b"_e{1,1}:a|b|#" + b",".join(b"t%d" % i for i in range(101)),
])
def test_bad_events(text):
    assert refused(text) == "bad_event" if b"#" not in text else refused(text) == "too_many_tags"


# --------------------------------------------------------------------------- service checks


def check(data: bytes) -> ServiceCheck:
    p = parse_datagram(data)
    assert p.errors == [] and len(p.service_checks) == 1, p
    return p.service_checks[0]


def test_service_check_minimal_and_every_field():
    assert check(b"_sc|agent.up|0") == ServiceCheck("agent.up", 0, None, None, "", ())
    assert check(b"_sc|agent.up|0|d:21|h:localhost|#tag1:test,tag2|m:this is fine") == \
        ServiceCheck("agent.up", 0, 21.0, "localhost", "this is fine", ("tag1:test", "tag2"))
    assert check(b"_sc|agent.up|0|d:21|h:localhost|h:localhost2|d:22") == \
        ServiceCheck("agent.up", 0, 22.0, "localhost2", "", ())
    assert [check(b"_sc|x|%d" % s).status for s in range(4)] == [0, 1, 2, 3]
    # the clients escape newlines and "m:" in messages, and append c: after m:
    assert check(b"_sc|x|2|m:line1\\nm\\: two|c:abc") == ServiceCheck("x", 2, None, None, "line1\nm: two", (), "abc")


def test_service_check_bad_optional_fields_are_skipped():
    assert check(b"_sc|agent.up|0|d:some_time") == ServiceCheck("agent.up", 0, None, None, "", ())
    assert check(b"_sc|agent.up|0|u:unknown") == ServiceCheck("agent.up", 0, None, None, "", ())


@pytest.mark.parametrize("text", [
    b"_sc|agent.up", b"_sc|agent.up|", b"_sc||", b"_sc|", b"_sc", b"_sc|agent.up|OK", b"_sc|agent.up|21",
    b"_sc|agent.up|-1", b"_sc||0", b"_scx|agent.up|0", b"_sc|a b|0", b"_sc|" + b"n" * (MAX_NAME + 1) + b"|0",
    b"_scale:1|c",  # as in the Agent, whatever starts with _sc is a service check
])
def test_bad_service_checks(text):
    assert refused(text) == "bad_service_check"


def test_every_reason_is_reachable():
    reasons = set()
    for data in (b"", b"\xff", b"a", b":1|c", b"a:x|c", b"a:1|q", b"a:1|c|@2", b"a:1|c|Tx",
                 b"a:1|c|#" + b",".join(b"t%d" % i for i in range(200)), b"a:1|c|#" + b"t" * 300, b"_e{", b"_sc"):
        reasons.update(r for r, _ in parse_datagram(data).errors)
    assert reasons == set(ERROR_REASONS)


# --------------------------------------------------------------------------- the official client


@pytest.fixture
def client_bytes():
    """The datagrams the official ``datadog`` DogStatsd client writes, read off a local UDP socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    client = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True, origin_detection_enabled=False,
                       constant_tags=["env:test"], container_id="ci-abc123")

    def sent(call) -> bytes:
        call(client)
        return sock.recv(65535)

    yield sent
    client.close_socket()
    sock.close()


def test_what_the_official_client_sends(client_bytes):
    d = client_bytes(lambda c: c.increment("page.views", 3, tags=["route:/home", "cached"], sample_rate=1))
    assert d == b"page.views:3|c|#route:/home,cached,env:test|c:ci-abc123\n"  # each ends its line
    assert one(d) == Sample("page.views", "c", (3.0,), 1.0, ("route:/home", "cached", "env:test"), None, "ci-abc123")

    d = client_bytes(lambda c: c.decrement("q.depth", 2))
    assert one(d).values == (-2.0,) and one(d).kind == "c"

    d = client_bytes(lambda c: c.gauge("temp", 21.5, tags=["room:a"]))
    assert one(d) == Sample("temp", "g", (21.5,), 1.0, ("room:a", "env:test"), None, "ci-abc123")

    d = client_bytes(lambda c: c.histogram("size", 1e-05))
    assert one(d).values == (1e-05,) and one(d).kind == "h"

    d = client_bytes(lambda c: c.distribution("latency", 123.25, tags=["a:b"]))
    assert one(d).values == (123.25,) and one(d).kind == "d"

    d = client_bytes(lambda c: c.timing("query.time", 12, sample_rate=0.99999999))
    # sampled with the rate the client was given; with it below 1 a send is not certain, so rate ~1
    assert one(d).kind == "ms" and one(d).sample_rate == 0.99999999

    d = client_bytes(lambda c: c.set("users.unique", "user:42"))
    assert one(d).values == ("user:42",) and one(d).kind == "s"

    d = client_bytes(lambda c: c.gauge_with_timestamp("temp", 20, timestamp=1700000000))
    assert d == b"temp:20|g|#env:test|c:ci-abc123|T1700000000\n"
    assert one(d).timestamp == 1700000000.0

    d = client_bytes(lambda c: c.count_with_timestamp("jobs", 5, timestamp=1700000001, tags=["q:x"]))
    assert one(d) == Sample("jobs", "c", (5.0,), 1.0, ("q:x", "env:test"), 1700000001.0, "ci-abc123")


def test_events_and_service_checks_of_the_official_client(client_bytes):
    d = client_bytes(lambda c: c.event("Disk full é", "on /var\nsecond line", alert_type="error", priority="low",
                                       aggregation_key="disk", source_type_name="monitor", date_happened=1700000000,
                                       hostname="web1", tags=["dev:sda"]))
    assert event(d) == Event("Disk full é", "on /var\nsecond line", 1700000000.0, "web1", "disk", "low", "monitor",
                             "error", ("dev:sda", "env:test"), "ci-abc123")

    d = client_bytes(lambda c: c.service_check("db.can_connect", DogStatsd.CRITICAL, tags=["db:main"],
                                               timestamp=1700000002, hostname="db1",
                                               message="refused\nm: retry"))
    assert check(d) == ServiceCheck("db.can_connect", 2, 1700000002.0, "db1", "refused\nm: retry",
                                    ("db:main", "env:test"), "ci-abc123")


def test_buffered_client_datagrams_hold_several_messages():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    client = DogStatsd(host="127.0.0.1", port=sock.getsockname()[1], disable_telemetry=True,
                       origin_detection_enabled=False, disable_buffering=False)
    try:
        client.increment("a")
        client.gauge("b", 2)
        client.distribution("c", 3)
        client.flush()
        d = sock.recv(65535)
    finally:
        client.close_socket()
        sock.close()
    p = parse_datagram(d)
    assert d.count(b"\n") >= 2 and p.errors == []
    assert [(s.name, s.kind, s.values) for s in p.samples] == [("a", "c", (1.0,)), ("b", "g", (2.0,)),
                                                               ("c", "d", (3.0,))]


def test_the_caches_of_valid_names_and_tag_fields_stay_bounded():
    from integrations.datadog import dogstatsd

    for i in range(dogstatsd._CACHE_SIZE + 100):
        one(b"n%d:1|c|#t:%d" % (i, i))
    assert len(dogstatsd._NAMES) <= dogstatsd._CACHE_SIZE and len(dogstatsd._TAGS) <= dogstatsd._CACHE_SIZE
    long_field = "#" + ",".join(f"t{i}" for i in range(80))
    assert len(long_field) > dogstatsd._CACHED_TAG_FIELD
    assert len(one(f"x:1|c|{long_field}".encode()).tags) == 80 and long_field not in dogstatsd._TAGS
    assert one(b"x:1|c|#a:1,b").tags == ("a:1", "b") and dogstatsd._TAGS["#a:1,b"] == ("a:1", "b")
