"""NetworkPolicy (networking.k8s.io/v1) semantics, evaluated offline over a model of the cluster's endpoints."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping

INGRESS, EGRESS = "Ingress", "Egress"


@dataclasses.dataclass(frozen=True)
class Port:
    """A port an endpoint listens on; `name` is the containerPort's name, which policies may use instead."""

    number: int
    protocol: str = "TCP"
    name: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Endpoint:
    """A pod (it has a namespace) or an address outside the pod network (a browser, the API server)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ports: tuple[Port, ...] = ()

    @property
    def pod(self) -> bool:
        return self.namespace is not None


@dataclasses.dataclass(frozen=True)
class Flow:
    """A connection `client` opens to `server` on `port`/`protocol` (endpoint names)."""

    client: str
    server: str
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.client} -> {self.server}:{self.port}/{self.protocol}"


def label_selector_matches(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: every matchLabels pair and every matchExpression must hold; {} matches everything."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not held:
            return False
    return True


def policy_types(policy: Mapping) -> list[str]:
    """spec.policyTypes, or its default: Ingress always, Egress when the policy has egress rules."""
    spec = policy["spec"]
    return spec.get("policyTypes") or [INGRESS] + ([EGRESS] if "egress" in spec else [])


class Cluster:
    """Namespaces (name: labels), endpoints and the NetworkPolicies in force; answers who may connect to whom."""

    def __init__(self, namespaces: Mapping[str, Mapping[str, str]], endpoints: Iterable[Endpoint], policies):
        # Kubernetes (1.22+) labels every namespace with its own name; namespaceSelectors rely on it.
        self.namespaces = {name: {**labels, "kubernetes.io/metadata.name": name} for name, labels in namespaces.items()}
        self.endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self.policies = list(policies)

    def selecting(self, pod: Endpoint, direction: str) -> list[Mapping]:
        """The policies that select `pod` and restrict `direction`: one of them isolates it in that direction."""
        return [
            policy
            for policy in self.policies
            if pod.pod
            and policy["metadata"]["namespace"] == pod.namespace
            and direction in policy_types(policy)
            and label_selector_matches(policy["spec"]["podSelector"], pod.labels)
        ]

    def admitting(self, direction: str, flow: Flow) -> list[str] | None:
        """The names of the policies that allow `flow` on one side; None when that side is not isolated."""
        client, server = self.endpoints[flow.client], self.endpoints[flow.server]
        selected, peer = (server, client) if direction == INGRESS else (client, server)
        policies = self.selecting(selected, direction)
        if not policies:
            return None
        key, rules = ("from", "ingress") if direction == INGRESS else ("to", "egress")
        return [
            policy["metadata"]["name"]
            for policy in policies
            if any(
                self._peers_match(rule.get(key), policy["metadata"]["namespace"], peer)
                and self._ports_match(rule.get("ports"), server, flow)
                for rule in policy["spec"].get(rules, [])
            )
        ]

    def allows(self, flow: Flow) -> bool:
        """Both sides must allow a connection: the client's egress and the server's ingress."""
        return all(self.admitting(direction, flow) != [] for direction in (EGRESS, INGRESS))

    def _peers_match(self, peers: list | None, namespace: str, other: Endpoint) -> bool:
        """An absent or empty peer list matches everything; otherwise any one peer must match."""
        return not peers or any(self._peer_matches(peer, namespace, other) for peer in peers)

    def _peer_matches(self, peer: Mapping, namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            assert set(peer) == {"ipBlock"}, f"ipBlock cannot be combined with selectors: {peer}"
            # Whether an ipBlock matches pod IPs is up to the CNI (Calico: yes); assume it does, the stricter reading.
            block = peer["ipBlock"]
            address = ipaddress.ip_address(other.ip)
            inside = address in ipaddress.ip_network(block["cidr"])
            return inside and not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        if not other.pod:
            return False
        if "namespaceSelector" in peer:
            in_namespace = label_selector_matches(peer["namespaceSelector"], self.namespaces[other.namespace])
        else:
            in_namespace = other.namespace == namespace  # a podSelector alone: the policy's own namespace
        return in_namespace and label_selector_matches(peer.get("podSelector", {}), other.labels)

    @staticmethod
    def _ports_match(ports: list | None, server: Endpoint, flow: Flow) -> bool:
        """An absent or empty port list matches every port; a named port is looked up on the server's pod."""
        if not ports:
            return True
        for entry in ports:
            if entry.get("protocol", "TCP") != flow.protocol:
                continue
            port = entry.get("port")
            if port is None:
                return True
            if isinstance(port, str):
                if server.pod and any(
                    p.name == port and p.protocol == flow.protocol and p.number == flow.port for p in server.ports
                ):
                    return True
            elif port <= flow.port <= entry.get("endPort", port):
                return True
        return False
