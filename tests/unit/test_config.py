"""Configuration: TOML plus environment, validated at start with errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from s25rbl.config import Endpoint, load_settings, system_resolvers
from s25rbl.errors import ConfigError

# Never the machine's own /etc/s25rbl/s25rbl.toml: the tests say which system file there is.
BASE = {"S25RBL_RESOLVER__UPSTREAMS": "127.0.0.1:5399", "S25RBL_SYSTEM_CONFIG": "/nonexistent/s25rbl.toml"}


def test_defaults_are_usable_without_a_file() -> None:
    s = load_settings(environ=BASE)
    assert s.dns.zone and s.dns.whitelist_zone and s.dns.listen
    assert s.database.url.startswith("sqlite:///")
    assert s.resolver.timeout == 1.5


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "s25rbl.toml"
    path.write_text(
        '[dns]\nlisten = ["127.0.0.1:53", "[::1]:53"]\nzone = "BL.Example.ORG."\nttl = 600\n'
        '[resolver]\nupstreams = ["192.0.2.53", "[2001:db8::53]:5353"]\ntimeout = 2\n'
        "[lists]\nbuiltin_whitelist = false\n"
    )
    s = load_settings(path, environ={"S25RBL_DNS__TTL": "900"})
    assert s.dns.listen == (Endpoint("127.0.0.1", 53), Endpoint("::1", 53))
    assert s.dns.zone == "bl.example.org"
    assert s.dns.ttl == 900
    assert s.resolver.upstreams == (Endpoint("192.0.2.53", 53), Endpoint("2001:db8::53", 5353))
    assert s.lists.builtin_whitelist is False


@pytest.mark.parametrize(
    ("env", "key", "says"),
    [
        ({"S25RBL_DNS__TTL": "soon"}, "dns.ttl", "not an integer"),
        ({"S25RBL_DNS__TTL": "-1"}, "dns.ttl", "out of range"),
        ({"S25RBL_DNS__LISTEN": "localhost:53"}, "dns.listen", "not an IPv4 or IPv6 address literal"),
        ({"S25RBL_DNS__LISTEN": "127.0.0.1"}, "dns.listen", "needs a port"),
        ({"S25RBL_DNS__LISTEN": "127.0.0.1:70000"}, "dns.listen", "port"),
        ({"S25RBL_DNS__ZONE": "bad_zone!"}, "dns.zone", "not a valid DNS label"),
        ({"S25RBL_DNS__WHITELIST_ZONE": "x.bl.s25rbl.test"}, "dns.whitelist_zone", "overlap"),
        ({"S25RBL_RESOLVER__TIMEOUT": "0"}, "resolver.timeout", "out of range"),
        ({"S25RBL_LISTS__BUILTIN_WHITELIST": "maybe"}, "lists.builtin_whitelist", "not a boolean"),
        ({"S25RBL_DATABASE__URL": "/var/lib/x.db"}, "database.url", "not a URL"),
        ({"S25RBL_DNS__NOPE": "1"}, "S25RBL_DNS__NOPE", "not a known setting"),
    ],
    ids=[
        "ttl-word",
        "ttl-negative",
        "listen-hostname",
        "listen-no-port",
        "listen-port-range",
        "zone-label",
        "zones-overlap",
        "timeout-zero",
        "bool",
        "url",
        "unknown-env",
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**BASE, **env})
    assert info.value.key == key
    assert says in str(info.value)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dns]\nzonee = 'x.example'\n")
    with pytest.raises(ConfigError, match=r"dns\.zonee: unknown key"):
        load_settings(path, environ=BASE)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dns\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ=BASE)


def test_without_a_named_file_the_system_file_is_read_when_it_exists(tmp_path: Path) -> None:
    system = tmp_path / "s25rbl.toml"
    env = {**BASE, "S25RBL_SYSTEM_CONFIG": str(system)}
    assert load_settings(environ=env).source == "defaults"  # none there: the built-in defaults
    system.write_text('[dns]\nzone = "bl.system.example"\n')
    s = load_settings(environ=env)
    assert (s.source, s.dns.zone) == (str(system), "bl.system.example")
    named = tmp_path / "named.toml"
    named.write_text('[dns]\nzone = "bl.named.example"\n')
    assert load_settings(environ={**env, "S25RBL_CONFIG": str(named)}).dns.zone == "bl.named.example"
    assert load_settings(named, environ=env).dns.zone == "bl.named.example"


@pytest.mark.parametrize(
    ("given", "key"), [("option", "--config"), ("env", "S25RBL_CONFIG")], ids=["option", "env"]
)
def test_a_missing_file_is_reported_as_what_named_it(given: str, key: str) -> None:
    path = "/nope/s25rbl.toml"
    with pytest.raises(ConfigError) as info:
        if given == "option":
            load_settings(path, environ=BASE)
        else:
            load_settings(environ={**BASE, "S25RBL_CONFIG": path})
    assert info.value.key == key
    assert str(info.value) == f"config: {key}: {path}: no such file"


def test_upstreams_default_to_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch example\n")
    assert system_resolvers(str(conf)) == (Endpoint("127.0.0.53", 53), Endpoint("fe80::1", 53))


def test_the_shipped_sample_configuration_is_valid() -> None:
    sample = Path(__file__).resolve().parents[2] / "deploy" / "s25rbl.toml"
    s = load_settings(sample, environ={})
    assert s.dns.zone == "bl.s25r.example.org"
    assert s.dns.hostmaster == "hostmaster.example.org"


def test_state_directory_from_systemd_holds_the_default_store() -> None:
    s = load_settings(environ={**BASE, "STATE_DIRECTORY": "/var/lib/s25rbl"})
    assert s.database.url == "sqlite:////var/lib/s25rbl/s25rbl.db"


# (id, key, value, expected problem)
UI_BAD = [
    ("secure-cookie", "S25RBL_UI__SECURE_COOKIE", "sometimes", "use auto, true or false"),
    ("proxy", "S25RBL_UI__TRUSTED_PROXIES", "127.0.0.1,proxy.example", "is not an address or a network"),
    ("idle", "S25RBL_UI__SESSION_IDLE", "5", "out of range"),
    ("history", "S25RBL_UI__HISTORY", "0", "out of range"),
]


@pytest.mark.parametrize(("key", "value", "problem"), [c[1:] for c in UI_BAD], ids=[c[0] for c in UI_BAD])
def test_bad_operators_page_settings_name_the_key(key: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(environ={**BASE, key: value})
    assert caught.value.key == "ui." + key.split("__")[1].lower()


def test_operators_page_settings_are_read_and_normalised() -> None:
    s = load_settings(
        environ={
            **BASE,
            "S25RBL_UI__TRUSTED_PROXIES": "127.0.0.1, 10.1.2.3/8",
            "S25RBL_UI__SECURE_COOKIE": "TRUE",
        }
    )
    assert s.ui.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
    assert s.ui.secure_cookie == "true" and s.ui.enabled and s.ui.sample_interval == 60


def test_caches_are_sized_in_bytes() -> None:
    s = load_settings(
        environ={**BASE, "S25RBL_DNS__ANSWER_CACHE_BYTES": "1048576", "S25RBL_RESOLVER__CACHE_BYTES": "0"}
    )
    assert s.dns.answer_cache_bytes == 1 << 20
    assert s.resolver.cache_bytes == 0
    assert s.dns.answer_cache_size is None and s.resolver.cache_size is None
    assert s.warnings == ()


@pytest.mark.parametrize(
    ("env", "replaced_by"),
    [
        ({"S25RBL_DNS__ANSWER_CACHE_SIZE": "1000"}, "dns.answer_cache_bytes"),
        ({"S25RBL_RESOLVER__CACHE_SIZE": "1000"}, "resolver.cache_bytes"),
    ],
    ids=["answer-cache", "resolver-cache"],
)
def test_entry_count_keys_still_work_with_a_warning(env: dict[str, str], replaced_by: str) -> None:
    s = load_settings(environ={**BASE, **env})
    assert 1000 in (s.dns.answer_cache_size, s.resolver.cache_size)
    assert len(s.warnings) == 1 and replaced_by in s.warnings[0]


def test_dns_abuse_limits_are_settings() -> None:
    s = load_settings(
        environ={
            **BASE,
            "S25RBL_DNS__TCP_MAX_CONNECTIONS": "200",
            "S25RBL_DNS__TCP_MAX_PER_PREFIX": "8",
            "S25RBL_DNS__UDP_RECEIVE_BUFFER": "8388608",
        }
    )
    assert (s.dns.tcp_max_connections, s.dns.tcp_max_per_prefix) == (200, 8)
    assert s.dns.udp_receive_buffer == 8 << 20


def test_udp_batching_is_on_by_default_and_can_be_turned_off() -> None:
    assert load_settings(environ=BASE).dns.udp_batch == 64
    assert load_settings(environ={**BASE, "S25RBL_DNS__UDP_BATCH": "0"}).dns.udp_batch == 0
    with pytest.raises(ConfigError, match="udp_batch"):
        load_settings(environ={**BASE, "S25RBL_DNS__UDP_BATCH": "5000"})


def test_the_c_fast_path_is_on_by_default_and_can_be_turned_off() -> None:
    assert load_settings(environ=BASE).dns.fast_path is True
    assert load_settings(environ={**BASE, "S25RBL_DNS__FAST_PATH": "false"}).dns.fast_path is False
    with pytest.raises(ConfigError, match="fast_path"):
        load_settings(environ={**BASE, "S25RBL_DNS__FAST_PATH": "sometimes"})


# --- [policy] ----------------------------------------------------------------------------


def test_the_policy_service_listens_on_10030_in_targrey_mode_by_default() -> None:
    policy = load_settings(environ=BASE).policy
    assert (policy.listen, policy.mode, policy.tarpit, policy.delay) == (
        Endpoint("127.0.0.1", 10030),
        "targrey",
        65,
        300,
    )
    assert (policy.retry_window, policy.max_age, policy.learn_after) == (2 * 86400, 35 * 86400, 2)
    assert (policy.ipv4_prefix, policy.ipv6_prefix, policy.dry_run) == (24, 64, False)
    assert policy.allow == ("127.0.0.0/8", "::1/128")


def test_an_empty_policy_listen_turns_the_service_off() -> None:
    assert load_settings(environ={**BASE, "S25RBL_POLICY__LISTEN": ""}).policy.listen is None


def test_policy_values_are_read_and_normalised() -> None:
    env = {
        "S25RBL_POLICY__MODE": "RGrey",
        "S25RBL_POLICY__ALLOW": "192.0.2.7, 2001:db8::/32",
        "S25RBL_POLICY__DRY_RUN": "yes",
        "S25RBL_POLICY__ON_TEMPFAIL": "defer",
    }
    policy = load_settings(environ={**BASE, **env}).policy
    assert (policy.mode, policy.dry_run, policy.on_tempfail) == ("rgrey", True, "defer")
    assert policy.allow == ("192.0.2.7/32", "2001:db8::/32")


@pytest.mark.parametrize(
    ("env", "key", "says"),
    [
        ({"S25RBL_POLICY__MODE": "postgrey"}, "policy.mode", "use s25r, rgrey, starpit or targrey"),
        ({"S25RBL_POLICY__TARPIT": "300"}, "policy.tarpit", "out of range"),
        ({"S25RBL_POLICY__TARPIT": "0"}, "policy.tarpit", "out of range"),
        (
            {"S25RBL_POLICY__DELAY": "7200", "S25RBL_POLICY__RETRY_WINDOW": "3600"},
            "policy.delay",
            "shorter than policy.retry_window",
        ),
        (
            {"S25RBL_POLICY__MAX_AGE": "3600", "S25RBL_POLICY__RETRY_WINDOW": "7200"},
            "policy.max_age",
            "retry_window",
        ),
        ({"S25RBL_POLICY__LISTEN": "localhost:10030"}, "policy.listen", "not an IPv4 or IPv6 address"),
        ({"S25RBL_POLICY__ALLOW": "mx1.example.org"}, "policy.allow", "not an address or a network"),
        ({"S25RBL_POLICY__IPV4_PREFIX": "33"}, "policy.ipv4_prefix", "out of range"),
        ({"S25RBL_POLICY__ON_TEMPFAIL": "reject"}, "policy.on_tempfail", "use dunno or defer"),
    ],
    ids=[
        "mode",
        "tarpit-too-long",
        "tarpit-zero",
        "delay-past-window",
        "max-age-short",
        "listen",
        "allow",
        "prefix",
        "tempfail",
    ],
)
def test_bad_policy_values_name_the_key(env: dict[str, str], key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={**BASE, **env})
    assert info.value.key == key
    assert says in str(info.value)
