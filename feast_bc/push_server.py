"""`/push` of `feast-bc serve` for feast_bc families: Feast's push request, every pin written.

Feast's feature server takes pushes as ``POST /push`` with ``{"push_source_name": ..., "df": {column:
[values]}, "to": "online"}`` and writes the views fed by that PushSource -- for a feast_bc family that
would be at most the latest version, since the older versions are derived views. :class:`PushRoute`
(an ASGI middleware in front of Feast's app) answers a push whose ``push_source_name`` is a feast_bc
family of the repo itself, through :class:`feast_bc.pusher.Pusher`: ``df`` holds the join key, ``embedding``
(one list of floats per row) and ``source_version`` (the version whose model embedded the rows, one
value for all of them); the vectors are recorded in the catalog and written into every pin
(:mod:`feast_bc.pusher`). Answers: 200 with what was written, 409 for a version that is not the latest
(embed again with the new model), 422 with one line for anything else wrong; any other push goes to
Feast unchanged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from feast_bc.asgi_requests import BadRequest, answer, in_thread, parse_body, read_body, replay
from feast_bc.errors import FeastBCError, VersionConflictError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE

logger = logging.getLogger(__name__)

PUSH_PATH = "/push"
PUSH_EXAMPLE = '{"push_source_name": "<family>", "df": {...}, "to": "online"}'


class PushRoute:
    """ASGI middleware: ``POST /push`` naming a feast_bc family is pushed into every pin (see the module)."""

    def __init__(self, app, repo: str | Path):
        self.app = app
        self.repo = Path(repo).absolute()
        self._pushers: dict[str, tuple[threading.Lock, object]] = {}
        self._guard = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != PUSH_PATH:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            payload = parse_body(body, PUSH_EXAMPLE)
            family = payload.get("push_source_name")
            if not isinstance(family, str) or not await in_thread(self._is_family, family):
                await self.app(scope, replay(body, receive), send)  # a push source of Feast's own
                return
            result = await in_thread(self._push, family, payload)
        except BadRequest as exc:
            logger.info("refused a push: %s", exc)
            await answer(send, exc.status, {"detail": str(exc)})
            return
        await answer(send, 200, result)

    def _is_family(self, name: str) -> bool:
        """Whether ``name`` is a family of the repo's catalog; once it is, without opening the catalog
        again (a catalog on object storage is listed on open)."""
        from feast_bc.catalog import Catalog

        if name in self._pushers:
            return True
        try:
            return Catalog.for_repo(self.repo).has_family(name)
        except FeastBCError:
            return False

    def _pusher(self, family: str):
        from feast_bc.pusher import Pusher

        with self._guard:
            if family not in self._pushers:
                self._pushers[family] = (threading.Lock(), Pusher(self.repo, family))
            return self._pushers[family]

    def _push(self, family: str, payload: dict) -> dict:
        df = payload.get("df")
        if not isinstance(df, dict):
            raise BadRequest(
                'a push needs "df": {column: [values]} with the join key, "embedding" and "source_version"'
            )
        lock, pusher = self._pusher(family)
        join_key = pusher.manifest().entity.join_key
        missing = [c for c in (join_key, EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE) if c not in df]
        if missing:
            raise BadRequest(
                f"push into {family!r}: df lacks {missing}; send the join key, {EMBEDDING_FEATURE!r} (one list of "
                f"floats per row) and {SOURCE_VERSION_FEATURE!r} (the version whose model embedded them)"
            )
        versions = df[SOURCE_VERSION_FEATURE]
        if not isinstance(versions, list) or not versions or len(set(map(repr, versions))) != 1:
            raise BadRequest(
                f"push into {family!r}: {SOURCE_VERSION_FEATURE!r} must hold one version number, the same for every row"
            )
        version = versions[0]
        if isinstance(version, bool) or not isinstance(version, int):
            raise BadRequest(
                f"push into {family!r}: {SOURCE_VERSION_FEATURE!r} must be an integer version, not {version!r}"
            )
        vectors = df[EMBEDDING_FEATURE]
        if not isinstance(vectors, list) or any(not isinstance(v, list) for v in vectors):
            raise BadRequest(f"push into {family!r}: {EMBEDDING_FEATURE!r} must be one list of numbers per row")
        try:
            with lock:
                result = pusher.push(df[join_key], _matrix(vectors, family), version=version)
        except VersionConflictError as exc:
            raise BadRequest(str(exc), status=409) from None
        except FeastBCError as exc:
            raise BadRequest(str(exc)) from None
        return result.model_dump(mode="json")


def _matrix(vectors: list, family: str):
    import numpy as np

    try:
        return np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(
            f"push into {family!r}: {EMBEDDING_FEATURE!r} rows must be lists of numbers of one length"
        ) from None
