"""The bridge's partner directory as `make run` and `make partner` use it: over its HTTP API, as any hub
operator's tool would (SPEC section 10)."""
import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack import infra


@dataclass
class Bridge:
    url: str
    token: str

    @classmethod
    def at(cls, url: str, token: str) -> "Bridge":
        return cls(url.rstrip("/"), token)

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        answer = httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"},
                               timeout=60, **kwargs)
        if answer.status_code >= 400:
            detail = answer.json().get("detail") if "json" in answer.headers.get("content-type", "") else answer.text
            hint = ("; the broker keeps topics from an older var/ of make run: `make clean` starts afresh"
                    if answer.status_code == 409 and "already has topics" in str(detail) else "")
            raise SystemExit(f"the bridge at {self.url} refused {method} {path}: {answer.status_code} {detail}{hint}")
        return answer

    def partners(self) -> list[dict]:
        return self._call("GET", "/api/partners").json()

    def bundle_for(self, partner_id: str, role: str, name: str, path: Path, rotate_missing: bool = True) -> Path:
        """The partner's bundle at `path`: kept from an earlier onboarding while the bridge still serves
        that partner, issued again (a rotation) when the file is gone (unless `rotate_missing` is False:
        then the id is someone else's), else onboarded now."""
        known = next((p for p in self.partners() if p["id"] == partner_id), None)
        if known is not None and known["status"] == "removed":
            raise SystemExit(f"{partner_id} was removed from the hub, and an id is never given again: choose another ID")
        if known is not None and known["role"] != role:
            raise SystemExit(f"{partner_id} is onboarded as {known['role']} partner, not {role}")
        if known is not None and path.exists() and json.loads(path.read_text()).get("partner_id") == partner_id:
            return path
        if known is not None and not rotate_missing:
            raise SystemExit(f"{partner_id} is onboarded already, and its bundle is not in {path.parent} (it is "
                             "make run's, or another company's): choose another ID")
        if known is not None:
            answer = self._call("POST", f"/api/partners/{partner_id}/rotate")
        else:
            answer = self._call("POST", "/api/partners", json={"id": partner_id, "name": name, "role": role})
        infra.write_private(path, json.dumps(answer.json()["bundle"], indent=2) + "\n")
        return path
