"""Third-party networks (/thirdparty/*), answered by the application services that list
them in their registration's `protocols`, through the AS API's
/_matrix/app/v1/thirdparty/... endpoints. Services are asked concurrently; one that
fails, times out or answers malformed data is left out of the answer (and logged)."""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import defer

from appservice.queries import call
from appservice.registration import Registration

logger = logging.getLogger(__name__)
TIMEOUT_S = 5  # clients (Element) ask for protocols at start-up: a dead bridge must not stall them
LOOKUP_KINDS = ("location", "user")
# The key each kind of result names its Matrix side with.
MATRIX_KEY = {"location": "alias", "user": "userid"}


def instance_id(as_id: str, network_id: str) -> str:
    """The homeserver-wide id of a protocol instance (`third_party_instance_id` in
    publicRooms): the service's id and the instance's network id."""
    return f"{as_id}|{network_id}"


class ThirdParty:
    def __init__(self, registrations: list[Registration]) -> None:
        self._all = registrations
        self.registrations = [r for r in registrations if r.url and r.protocols]

    def parse_instance_id(self, value: str) -> tuple[str, str] | None:
        """(service id, network id) of an instance id; None if no service has it."""
        for reg in self._all:
            if value.startswith(reg.id + "|") and len(value) > len(reg.id) + 1:
                return reg.id, value[len(reg.id) + 1:]
        return None

    def knows(self, protocol: str) -> bool:
        return any(protocol in r.protocols for r in self.registrations)

    async def protocols(self) -> dict[str, dict[str, Any]]:
        """Every protocol's metadata; instances of services sharing a protocol are merged,
        each given its `instance_id`."""
        asked = [(reg, p) for reg in self.registrations for p in reg.protocols]
        answers = await defer.gatherResults(
            [defer.ensureDeferred(self._get(reg, f"/_matrix/app/v1/thirdparty/protocol/{quote(p, safe='')}"))
             for reg, p in asked])
        merged: dict[str, dict[str, Any]] = {}
        for (reg, protocol), meta in zip(asked, answers):
            if not isinstance(meta, dict):
                continue
            instances = [dict(i, instance_id=instance_id(reg.id, i["network_id"]))
                         for i in meta.get("instances") or [] if isinstance(i, dict)
                         and isinstance(i.get("network_id"), str)]
            if protocol in merged:
                merged[protocol]["instances"].extend(instances)
            else:
                merged[protocol] = dict(meta, instances=instances)
        return merged

    async def lookup(self, kind: str, protocol: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        """`kind` location or user: by protocol and fields, or (protocol None) the reverse
        look-up by Matrix alias / user id, asked of every service with protocols."""
        assert kind in LOOKUP_KINDS
        regs = [r for r in self.registrations if protocol is None or protocol in r.protocols]
        path = f"/_matrix/app/v1/thirdparty/{kind}"
        if protocol is not None:
            path += "/" + quote(protocol, safe="")
        if query:
            path += "?" + urlencode(query)
        answers = await defer.gatherResults([defer.ensureDeferred(self._get(reg, path)) for reg in regs])
        key = MATRIX_KEY[kind]
        return [r for answer in answers if isinstance(answer, list) for r in answer
                if isinstance(r, dict) and isinstance(r.get(key), str) and isinstance(r.get("protocol"), str)
                and isinstance(r.get("fields"), dict)]

    async def _get(self, reg: Registration, path: str) -> Any:
        try:
            code, content = await call(reg, "GET", path, timeout=TIMEOUT_S)
            if code != 200:
                logger.info("third-party query %s to %s answered %d", path, reg.id, code)
                return None
            return json.loads(content)
        except Exception as e:  # a service being down or confused must not break the others
            logger.warning("third-party query %s to %s failed: %s", path, reg.id, e)
            return None
