"""The ingest replay cache: a webhook request already accepted is refused while its signature would still pass.

Signature checks alone accept a captured request again and again: Stripe's for its tolerance (300 s) after the
signed timestamp, HubSpot's likewise, and a canonical (bearer) or Pipedrive (basic auth) request for ever, since
nothing in it is dated. Event-id dedup keeps the metrics right, but each replay adds up to a body to a raw topic
kept forever. So an accepted request is remembered until its signature expires (for the undated sources, for
`REVPULSE_INGEST_REPLAY_WINDOW`), and the same request seen meanwhile is refused and counted.

What identifies a request is what its authentication covers, never the headers as sent (a header can be rewritten
around a valid signature: reordered, padded with extra `v1=` values): the source, the signed timestamp (Stripe,
HubSpot) and the SHA-256 of the body. A provider's own retry is signed anew (a new timestamp), so it is not a replay.

The cache is bounded: at most `capacity` requests are held (≈ 200 bytes each). Only authenticated requests enter it
(a replay is refused, not added), so filling it takes the secrets; when it is full anyway, the request closest to
expiry is dropped (counted in `evicted`), which at worst lets that one request be replayed once more.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter


class ReplayCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self.refused: Counter[str] = Counter()  # per source
        self.evicted = 0

    @staticmethod
    def key(source: str, signed_at: str, body: bytes) -> bytes:
        """The identity of a request: source, signed timestamp ("" when undated) and body."""
        digest = hashlib.sha256()
        digest.update(f"{source}\x00{signed_at}\x00".encode())
        digest.update(body)
        return digest.digest()

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: bytes) -> bool:
        return key in self._expiry

    def claim(self, source: str, key: bytes, expires: float, now: float) -> bool:
        """Remember `key` until `expires` and return True; False (counted) if it is already remembered. A claim
        that did not end in storing the body must be released (`release`), so that the provider's retry passes."""
        self._expire(now)
        if key in self._expiry:
            self.refused[source] += 1
            return False
        while len(self._expiry) >= self.capacity:
            self._evict()
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, key))
        return True

    def release(self, key: bytes) -> None:
        self._expiry.pop(key, None)
        # Its heap entry is dropped lazily; rebuild before the stale entries outnumber the live ones.
        if len(self._heap) > 2 * max(len(self._expiry), 64):
            self._heap = [(expires, key) for key, expires in self._expiry.items()]
            heapq.heapify(self._heap)

    def _expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]

    def _evict(self) -> None:
        while self._heap:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]
                self.evicted += 1
                return
