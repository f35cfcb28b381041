"""The pushed series the control-plane knows: bounded, each with its last value, served to Prometheus.

A series is a name and a label set. Each is kept until `ttl` seconds after its last sample (0: until deleted),
or until its Pushgateway group is deleted or replaced without it; at most `limit` at once, so a flood of label
sets costs a refusal, never memory. The Pushgateway door's groups (`job` and the path's labels) are kept with
the time of their last push and last failed push, which the exposition shows as Pushgateway does.
"""

from __future__ import annotations

import json
from typing import NamedTuple

TYPED = ("counter", "gauge", "histogram", "summary", "info", "stateset", "gaugehistogram")


class Group(NamedTuple):
    """A Pushgateway grouping key: `job` and the path's label pairs, sorted (`key`), and as a dict."""

    key: tuple
    labels: dict

    @classmethod
    def of(cls, labels: dict) -> Group:
        return cls(tuple(sorted(labels.items())), labels)

    def merge(self, labels: dict, where: str) -> dict:
        """`labels` with the group's; a sample may not carry a grouping label with another value (Pushgateway)."""
        from numcast_control.push import PushError

        for name, value in self.labels.items():
            if labels.get(name, value) != value:
                raise PushError(
                    400,
                    "invalid",
                    f"{where}: label {name}={labels[name]!r}, but the path's grouping key says {value!r}",
                )
        return {**labels, **self.labels}


class Entry:
    """One series: its envelope fragment, last value and time, and where it came from."""

    __slots__ = ("family", "group", "kind", "pushed_at", "ts", "value")

    def __init__(self, value: float, ts: float, pushed_at: float, group: tuple | None, family: str, kind: str):
        self.value, self.ts, self.pushed_at, self.group = value, ts, pushed_at, group
        self.family, self.kind = family, kind


class GroupState:
    """A Pushgateway group: its labels, its series, when it was last pushed to and last refused."""

    __slots__ = ("failed_at", "labels", "pushed_at", "series")

    def __init__(self, labels: dict) -> None:
        self.labels, self.series, self.pushed_at, self.failed_at = labels, set(), 0.0, 0.0


class SeriesTable:
    """Not thread-safe: its owner (numcast_control.push.Pusher) calls it under one lock."""

    def __init__(self, limit: int, ttl: float) -> None:
        self.limit, self.ttl = limit, ttl
        self.fragments: dict[tuple, str] = {}  # key -> `"series":…,"labels":{…}`, as in every envelope of it
        self.entries: dict[tuple, Entry] = {}
        self.groups: dict[tuple, GroupState] = {}
        self.families: dict[str, list] = {}  # family -> [kind, series]
        self._expired_at = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def fragment(key: tuple) -> str:
        """The part of a series' envelopes that names it."""
        labels = json.dumps(dict(key[1]), ensure_ascii=False, separators=(",", ":"))
        return f'"series":"{key[0]}","labels":{labels}'

    def apply(self, seen: dict, group: Group | None, replace: str, now: float) -> None:
        """Take a checked batch's series ({key: (sample, value, ts, fragment)}), or raise PushError changing nothing."""
        from numcast_control.push import PushError

        state = self.groups.get(group.key) if group is not None else None
        dropped: set = set()
        if state is not None and replace == "group":
            dropped = state.series - seen.keys()
        elif state is not None and replace == "names":
            names = {sample.family or sample.series for sample, *_ in seen.values()}
            dropped = {key for key in state.series - seen.keys() if self.entries[key].family in names}
        new = [key for key in seen if key not in self.entries]
        new_groups = int(group is not None and state is None)
        if len(self.entries) - len(dropped) + len(new) > self.limit or len(self.groups) + new_groups > self.limit:
            self.expire(now, force=True)
            dropped &= self.entries.keys()
            if len(self.entries) - len(dropped) + len(new) > self.limit or len(self.groups) + new_groups > self.limit:
                raise PushError(
                    400,
                    "series_limit",
                    f"PUSH_MAX_SERIES: {len(new)} new series would pass the limit of {self.limit} distinct series "
                    f"known at once (now {len(self.entries)}); they are forgotten PUSH_SERIES_TTL after their "
                    "last sample, or when their group is deleted",
                )
        for sample, *_ in seen.values():
            family, kind = sample.family or sample.series, sample.kind
            known = self.families.get(family)
            if known and kind in TYPED and known[0] in TYPED and known[0] != kind:
                raise PushError(400, "invalid", f"{sample.named}: {family} is a {known[0]}, not a {kind}")
        for key in dropped:
            self._remove(key)
        if group is not None:
            state = self.groups.setdefault(group.key, GroupState(group.labels))
            state.pushed_at = now
        for key, (sample, value, ts, fragment) in seen.items():
            entry = self.entries.get(key)
            if entry is None:
                family = sample.family or sample.series
                known = self.families.setdefault(family, [sample.kind, 0])
                known[1] += 1
                if known[0] not in TYPED:
                    known[0] = sample.kind
                self.entries[key] = Entry(value, ts, now, None, family, sample.kind)
                self.fragments[key] = fragment
                entry = self.entries[key]
            entry.value, entry.ts, entry.pushed_at = value, ts, now
            moved_to = group.key if group is not None else None
            if entry.group != moved_to:
                if entry.group in self.groups:
                    self.groups[entry.group].series.discard(key)
                entry.group = moved_to
                if state is not None:
                    state.series.add(key)

    def delete(self, group: Group) -> bool:
        """Forget `group` and its series."""
        state = self.groups.pop(group.key, None)
        if state is None:
            return False
        for key in state.series:
            self._remove(key, keep_group=True)
        return True

    def failed(self, group: Group, now: float) -> None:
        """A push to `group` was refused (only a group that exists records it, or a flood could make groups)."""
        if group.key in self.groups:
            self.groups[group.key].failed_at = now

    def expire(self, now: float, force: bool = False) -> int:
        """Forget series not pushed for `ttl` seconds (and groups left empty as long); at most once a second."""
        if not self.ttl or (not force and now - self._expired_at < 1.0):
            return 0
        self._expired_at = now
        deadline = now - self.ttl
        stale = [key for key, entry in self.entries.items() if entry.pushed_at < deadline]
        for key in stale:
            self._remove(key)
        for key in [k for k, state in self.groups.items() if not state.series and state.pushed_at < deadline]:
            del self.groups[key]
        return len(stale)

    def _remove(self, key: tuple, keep_group: bool = False) -> None:
        entry = self.entries.pop(key)
        del self.fragments[key]
        known = self.families[entry.family]
        known[1] -= 1
        if not known[1]:
            del self.families[entry.family]
        if not keep_group and entry.group in self.groups:
            self.groups[entry.group].series.discard(key)

    def render(self, now: float) -> str:
        """Every series and group in the text exposition format, as Pushgateway serves them (no timestamps)."""
        self.expire(now)
        by_family: dict[str, list[str]] = {}
        for key, entry in self.entries.items():
            labels = dict(key[1])
            if entry.group is not None:
                labels.setdefault("instance", "")  # as Pushgateway: no instance of the scrape target's
            by_family.setdefault(entry.family, []).append(f"{key[0]}{_labels(labels)} {entry.value!r}")
        out = []
        for family in sorted(by_family):
            kind = self.families[family][0]
            out.append(f"# TYPE {family} {kind if kind in TYPED else 'untyped'}")
            out.extend(sorted(by_family[family]))
        for name, attribute in (("push_time_seconds", "pushed_at"), ("push_failure_time_seconds", "failed_at")):
            if self.groups:
                out.append(
                    f"# HELP {name} Last Unix time of a {'refused ' if 'failure' in name else ''}push to a group."
                )
                out.append(f"# TYPE {name} gauge")
            for state in self.groups.values():
                labels = {"instance": "", **state.labels}
                out.append(f"{name}{_labels(labels)} {float(getattr(state, attribute))!r}")
        return "\n".join(out) + "\n" if out else ""


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
