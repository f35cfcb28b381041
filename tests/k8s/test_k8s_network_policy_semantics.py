"""The evaluator of network_policy.py against the NetworkPolicy rules of the Kubernetes API reference, case by case."""

from __future__ import annotations

import pytest
from network_policy import EGRESS, INGRESS, Cluster, Endpoint, Flow, Port

pytestmark = pytest.mark.k8s

WEB = {"app": "web"}
DB = {"app": "db"}
ENDPOINTS = [
    Endpoint("web", "10.0.0.1", "shop", WEB),
    Endpoint("db", "10.0.0.2", "shop", DB, (Port(5432, "TCP", "sql"), Port(53, "UDP", "dns"))),
    Endpoint("other/web", "10.0.1.1", "other", WEB),
    Endpoint("other/db", "10.0.1.2", "other", DB, (Port(5432, "TCP", "sql"),)),
    Endpoint("outside", "203.0.113.7"),
]
NAMESPACES = {"shop": {"team": "a"}, "other": {"team": "b"}}


def policy(spec: dict, name: str = "p") -> dict:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": spec}


def db_ingress(*rules, name: str = "p") -> dict:
    """A policy selecting db with these ingress rules."""
    return policy({"podSelector": {"matchLabels": DB}, "ingress": list(rules)}, name)


FROM_WEB = {"from": [{"podSelector": {"matchLabels": WEB}}]}


CASES = [
    ("no policy: open", [], Flow("other/web", "db", 5432), True),
    ("selected, no rule: closed", [db_ingress()], Flow("web", "db", 5432), False),
    ("podSelector alone: own namespace", [db_ingress(FROM_WEB)], Flow("web", "db", 5432), True),
    ("podSelector alone: not another namespace", [db_ingress(FROM_WEB)], Flow("other/web", "db", 5432), False),
    ("no from: every source", [db_ingress({"ports": [{"port": 5432}]})], Flow("outside", "db", 5432), True),
    (
        "namespaceSelector alone: every pod there",
        [db_ingress({"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]})],
        Flow("other/db", "db", 5432),
        True,
    ),
    (
        "both selectors in one peer: AND",
        [
            db_ingress(
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": WEB}}]}
            )
        ],
        Flow("other/db", "db", 5432),
        False,
    ),
    (
        "two peers: OR",
        [
            db_ingress(
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "b"}}},
                        {"podSelector": {"matchLabels": WEB}},
                    ]
                }
            )
        ],
        Flow("other/db", "db", 5432),
        True,
    ),
    (
        "the automatic namespace name label",
        [db_ingress({"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}]})],
        Flow("other/web", "db", 5432),
        True,
    ),
    (
        "ipBlock",
        [db_ingress({"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]})],
        Flow("outside", "db", 5432),
        True,
    ),
    (
        "ipBlock except",
        [db_ingress({"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.0/28"]}}]})],
        Flow("outside", "db", 5432),
        False,
    ),
    ("named port", [db_ingress({**FROM_WEB, "ports": [{"port": "sql"}]})], Flow("web", "db", 5432), True),
    (
        "named port, other number",
        [db_ingress({**FROM_WEB, "ports": [{"port": "sql"}]})],
        Flow("web", "db", 5433),
        False,
    ),
    (
        "named port, other protocol",
        [db_ingress({**FROM_WEB, "ports": [{"port": "dns", "protocol": "TCP"}]})],
        Flow("web", "db", 53, "UDP"),
        False,
    ),
    (
        "protocol defaults to TCP",
        [db_ingress({**FROM_WEB, "ports": [{"port": 53}]})],
        Flow("web", "db", 53, "UDP"),
        False,
    ),
    (
        "endPort",
        [db_ingress({**FROM_WEB, "ports": [{"port": 5000, "endPort": 6000}]})],
        Flow("web", "db", 5432),
        True,
    ),
    (
        "port absent: every port of the protocol",
        [db_ingress({**FROM_WEB, "ports": [{"protocol": "UDP"}]})],
        Flow("web", "db", 53, "UDP"),
        True,
    ),
    (
        "policies union",
        [db_ingress(name="a"), policy({"podSelector": {"matchLabels": DB}, "ingress": [FROM_WEB]}, "b")],
        Flow("web", "db", 5432),
        True,
    ),
    (
        "matchExpressions NotIn matches a pod without the label",
        [
            db_ingress(
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}}
                    ]
                }
            )
        ],
        Flow("web", "db", 5432),
        True,
    ),
    (
        "matchExpressions Exists",
        [db_ingress({"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}]})],
        Flow("web", "db", 5432),
        False,
    ),
    (
        "egress: isolated when policyTypes says so",
        [policy({"podSelector": {}, "policyTypes": [EGRESS]})],
        Flow("web", "other/db", 5432),
        False,
    ),
    (
        "egress: not isolated by an ingress-only policy",
        [policy({"podSelector": {}})],
        Flow("web", "other/db", 5432),
        True,
    ),
    (
        "egress rules make the default policyTypes include Egress",
        [policy({"podSelector": {"matchLabels": WEB}, "egress": [{"to": [{"podSelector": {"matchLabels": DB}}]}]})],
        Flow("web", "other/db", 5432),
        False,
    ),
    (
        "egress named port is looked up on the destination",
        [
            policy(
                {
                    "podSelector": {"matchLabels": WEB},
                    "policyTypes": [EGRESS],
                    "egress": [{"ports": [{"port": "sql"}]}],
                }
            )
        ],
        Flow("web", "other/db", 5432),
        True,
    ),
    (
        "egress named port never matches an address outside",
        [
            policy(
                {
                    "podSelector": {"matchLabels": WEB},
                    "policyTypes": [EGRESS],
                    "egress": [{"ports": [{"port": "sql"}]}],
                }
            )
        ],
        Flow("web", "outside", 5432),
        False,
    ),
]


@pytest.mark.parametrize("policies, flow, allowed", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_evaluator_follows_the_api_reference(policies, flow, allowed):
    assert Cluster(NAMESPACES, ENDPOINTS, policies).allows(flow) is allowed


def test_admitting_names_every_policy_that_allows_a_side_and_none_when_it_is_open():
    world = Cluster(NAMESPACES, ENDPOINTS, [db_ingress(FROM_WEB, name="a"), db_ingress(FROM_WEB, name="b")])
    assert world.admitting(INGRESS, Flow("web", "db", 5432)) == ["a", "b"]
    assert world.admitting(INGRESS, Flow("outside", "db", 5432)) == []
    assert world.admitting(EGRESS, Flow("web", "db", 5432)) is None
