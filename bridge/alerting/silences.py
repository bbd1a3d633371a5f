"""Silences: label matchers that mute matching alerts' notifications until they expire.

As in Alertmanager, a silence has matchers, a start, an end, who made it and why; it mutes an
alert while ``starts_at <= now < ends_at`` and every matcher matches. Silences are kept in
``silences.json`` in the state directory.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.alerting.model import MAX_TIME, Matcher, matches_all, parse_rfc3339, rfc3339
from bridge.alerting.store import write_json_atomic

__all__ = ["Silence", "Silences"]

log = logging.getLogger("monbridge.alerting.silences")

#: Matchers one silence may have (they all must match: a few name the alerts to mute).
MAX_MATCHERS = 100


@dataclass
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def state(self, now: float) -> str:
        return "pending" if now < self.starts_at else ("active" if now < self.ends_at else "expired")

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "matchers": [m.to_json() for m in self.matchers],
                             "startsAt": rfc3339(self.starts_at), "endsAt": rfc3339(self.ends_at),
                             "createdBy": self.created_by, "comment": self.comment}
        if now is not None:
            d["status"] = {"state": self.state(now)}
        return d

    @classmethod
    def from_request(cls, doc: Any, now: float) -> Silence:
        """From the API's JSON (Alertmanager v2's silence, or ``duration`` in seconds instead of
        ``endsAt``); errors name the field."""
        if not isinstance(doc, Mapping):
            raise ValueError("body: expected a JSON object with matchers and endsAt (or duration)")
        raw = doc.get("matchers")
        if not isinstance(raw, list) or not raw:
            raise ValueError("matchers: expected a non-empty list of matchers")
        if len(raw) > MAX_MATCHERS:
            raise ValueError(f"matchers: {len(raw)} matchers is more than the limit of {MAX_MATCHERS} per silence")
        matchers = []
        for i, m in enumerate(raw):
            try:
                matchers.append(Matcher.from_json(m))
            except ValueError as e:
                raise ValueError(f"matchers[{i}]: {e}") from None
        starts = parse_rfc3339(doc.get("startsAt"), "startsAt") or now
        if doc.get("duration") is not None:
            dur = doc["duration"]
            if isinstance(dur, bool) or not isinstance(dur, (int, float)):
                raise ValueError("duration: expected a number of seconds")
            if dur <= 0:
                raise ValueError("duration: expected a positive number of seconds")
            try:
                ends = starts + float(dur)  # an integer beyond a float's range overflows here
            except OverflowError:
                ends = math.inf
            if ends > MAX_TIME:
                raise ValueError("duration: the silence would end after 9999-12-31")
        else:
            end = parse_rfc3339(doc.get("endsAt"), "endsAt")
            if end is None:
                raise ValueError("endsAt: required (or give duration in seconds)")
            ends = end
        if ends <= starts:
            raise ValueError("endsAt: must be after startsAt")
        for field in ("id", "createdBy", "comment"):
            if doc.get(field) is not None and not isinstance(doc[field], str):
                raise ValueError(f"{field}: expected a string")
        return cls(doc.get("id") or str(uuid.uuid4()), tuple(matchers), starts, ends,
                   doc.get("createdBy") or "", doc.get("comment") or "")


class Silences:
    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.silences: dict[str, Silence] = {}
        if path is not None and path.exists():
            try:
                for d in json.loads(path.read_text()):
                    s = Silence(d["id"], tuple(Matcher.from_json(m) for m in d["matchers"]),
                                float(d["starts_at"]), float(d["ends_at"]), d.get("created_by", ""), d.get("comment", ""))
                    self.silences[s.id] = s
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("silences file %s is unreadable (%s); starting without silences", path, e)

    def _save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, [
                {"id": s.id, "matchers": [m.to_json() for m in s.matchers], "starts_at": s.starts_at,
                 "ends_at": s.ends_at, "created_by": s.created_by, "comment": s.comment}
                for s in self.silences.values()])

    def add(self, s: Silence) -> Silence:
        self.silences[s.id] = s
        self._save()
        log.info("silence %s added: %s until %s (%s)", s.id, ",".join(map(str, s.matchers)), rfc3339(s.ends_at),
                 s.created_by or "anonymous")
        return s

    def expire(self, silence_id: str) -> Silence:
        s = self.silences.get(silence_id)
        if s is None:
            raise KeyError(f"no silence with id {silence_id!r}")
        s.ends_at = min(s.ends_at, self.clock())
        s.starts_at = min(s.starts_at, s.ends_at)
        self._save()
        return s

    def all(self) -> list[Silence]:
        return sorted(self.silences.values(), key=lambda s: s.starts_at)

    def muting(self, labels: Mapping[str, str]) -> Silence | None:
        now = self.clock()
        for s in self.silences.values():
            if s.active(now) and matches_all(s.matchers, labels):
                return s
        return None
