"""The roles as data: the ACL lines they render for each Redis version, and the table of docs/security.md."""

import hashlib
import re
from pathlib import Path

import pytest

from numcast import redis_acl

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
PASSWORDS = {role.name: f"pw-{role.name}" for role in redis_acl.ROLES}


@pytest.mark.parametrize("version", [6, 7])
def test_every_line_starts_from_nothing_and_the_default_user_is_off(version):
    lines = redis_acl.render(PASSWORDS, version=version).splitlines()
    assert lines[0] == "user default off nopass resetkeys resetchannels -@all"
    for role, line in zip(redis_acl.ROLES, lines[1:], strict=True):
        words = line.split()
        assert words[:4] == ["user", role.name, "on", "#" + hashlib.sha256(PASSWORDS[role.name].encode()).hexdigest()]
        # Redis 6.2 lets a user reach every channel unless told otherwise: the reset comes before any `&` rule.
        assert words[4:7] == ["resetkeys", "resetchannels", "-@all"]
        assert PASSWORDS[role.name] not in line


def test_redis_6_gets_no_rule_it_does_not_know():
    text = redis_acl.render(PASSWORDS, version=6)
    assert "%R~" not in text and "(" not in text


def test_redis_7_makes_the_read_keys_read_only_and_gives_the_alerter_publish_on_its_channel_only():
    worker = redis_acl.BY_NAME["worker"].rules("numbers", "alerts", 7)
    assert "%R~numbers:log" in worker and "~numcast:presence:numbers:*" in worker
    alerter = redis_acl.BY_NAME["alerter"].rules("numbers", "alerts", 7)
    assert "+publish" not in alerter and alerter[-1] == "(+publish &alerts)" and "&numbers" in alerter
    assert "&numbers:push" in alerter, "rules watch pushed series too"


def test_keys_and_channels_follow_the_channel_settings():
    text = redis_acl.render(PASSWORDS, "prices", "price-alerts", version=7)
    assert "numbers" not in text and "&alerts" not in text
    assert "~prices:log" in text and "&price-alerts" in text and "numcast:alerts:price-alerts:rules" in text


def test_the_security_doc_lists_each_role_and_its_commands():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| Redis user `(\w+)` \|.*$", DOC.read_text(), re.M)}
    assert set(rows) == set(redis_acl.BY_NAME)
    for role in redis_acl.ROLES:
        for command in role.commands:
            if command in ("ping", "select", "unsubscribe", "discard"):
                continue  # plumbing, described once below the table
            word = command.split("|")[0].upper()
            assert word in rows[role.name].upper(), f"docs/security.md: {role.name} runs {command}"
