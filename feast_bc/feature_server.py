"""`feast-bc serve`: Feast's own HTTP feature server, with the entity values of a read checked first.

Why: consumers read pins through Feast's feature server (`feast serve`, POST
``/get-online-features``), and Feast 0.67's server answers entity values it cannot use badly
(measured, docs/RELIABILITY.md section 15): a ``null`` id is HTTP 500 ``attribute name must be
string``, an id outside int64 (``1e30``, ``2**63``) is 500 ``Value out of range``, and a ``NaN`` id
(Python's JSON reader accepts it) closes the connection, after which that server answered no
further request. feast_bc never runs inside `feast serve` (consumers need only Feast), so it cannot
guard that process; operators who deploy the server can run this one instead.

What it is: :func:`feast.feature_server.get_app` -- Feast's app, every endpoint and answer
unchanged -- wrapped in :class:`EntityCheck`, an ASGI middleware that reads the body of each
``/get-online-features`` request and answers **422 with one line** (``{"detail": ...}``) when it is
not JSON (``NaN`` and ``Infinity`` included), names a feature service the registry lacks (404),
misses a join key the requested views need, sends entity columns of different lengths, or holds a
value the entity's declared type cannot hold (null, nested lists, a string for an int64 key, a
fraction or an integer outside the type's range). A request that passes reaches Feast's handler
byte for byte. The registry is Feast's, read through its cache (``registry_ttl_sec``), so an
``feast apply`` is seen as `feast serve` sees it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from feast_bc.asgi_requests import BadRequest, answer, in_thread, parse_body, read_body, replay
from feast_bc.push_server import PushRoute

logger = logging.getLogger(__name__)

#: The reads the check guards (Feast's path).
READ_PATH = "/get-online-features"
#: Feast's ``feast.constants.DEFAULT_FEATURE_SERVER_REGISTRY_TTL`` (5 in 0.67), repeated so that
#: building the CLI's parser does not import feast (seconds).
DEFAULT_REGISTRY_TTL_SEC = 5

_INT_RANGES = {
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UNIX_TIMESTAMP": (-(2**63), 2**63 - 1),
}


class ServeConfig(BaseModel):
    """Where `feast-bc serve` listens (loopback by default: exposing it is the operator's choice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(6566, ge=1, le=65535, description="Feast's default feature server port")
    registry_ttl_sec: int = Field(DEFAULT_REGISTRY_TTL_SEC, ge=0)
    access_log: bool = True
    feature_store_yaml: str | None = Field(
        None, description="the profile's yaml inside the repo (Feast's `feast -f`); None: feature_store.yaml"
    )


class RegistryView:
    """What the check needs from the registry: join-key types and the join keys a read needs.

    Read through the :class:`feast.FeatureStore`'s registry cache, so it sees what Feast's own
    handler sees for the same request.
    """

    def __init__(self, store):
        self.store = store

    def join_key_types(self) -> dict[str, str]:
        return {e.join_key: e.value_type.name for e in self.store.list_entities(allow_cache=True)}

    def required_keys(self, payload: Mapping[str, Any]) -> set[str]:
        """The join keys the requested service or features need (BadRequest if the service is unknown)."""
        service = payload.get("feature_service")
        if service is not None:
            if not isinstance(service, str):
                raise BadRequest(f"'feature_service' must be a name, got {json.dumps(service)[:60]}")
            names = [p.name for p in self._service(service).feature_view_projections]
        else:
            features = payload.get("features") or []
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise BadRequest("'features' must be a list of 'view:feature' names")
            names = sorted({f.split(":", 1)[0] for f in features if ":" in f})
        keys: set[str] = set()
        for name in names:
            try:
                view = self.store.get_feature_view(name, allow_registry_cache=True)
            except Exception:  # an on-demand view or one Feast will report itself
                continue
            keys.update(column.name for column in view.entity_columns)
        return keys

    def _service(self, name: str):
        from feast.errors import FeatureServiceNotFoundException

        try:
            return self.store.get_feature_service(name, allow_cache=True)
        except FeatureServiceNotFoundException:
            known = sorted(
                s.name for s in self.store.registry.list_feature_services(self.store.project, allow_cache=True)
            )
            raise BadRequest(
                f"no feature service {name!r} in project {self.store.project!r} "
                f"(it has: {', '.join(known) or 'none'}; `feast feature-services list` shows them)",
                status=404,
            ) from None


def _check_value(key: str, position: int, value: Any, value_type: str | None) -> None:
    where = f"entity {key!r} at position {position}"
    if value is None:
        raise BadRequest(f"{where} is null: send an id for every row (an unknown id reads as null values)")
    if isinstance(value, (list, dict)):
        raise BadRequest(f"{where} is a JSON {type(value).__name__}: each entity value is one id")
    if value_type in _INT_RANGES:
        low, high = _INT_RANGES[value_type]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{where} is {json.dumps(value)[:40]}: {key!r} is {value_type}, send whole numbers")
        if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
            raise BadRequest(f"{where} is {value!r}: {key!r} is {value_type}, send whole numbers")
        if not low <= value <= high:
            shown = value if isinstance(value, int) else f"{value:.6g}"
            raise BadRequest(f"{where} is {shown}: outside {value_type}'s range [{low}, {high}]")
    elif value_type == "STRING" and not isinstance(value, str):
        raise BadRequest(f"{where} is {json.dumps(value)[:40]}: {key!r} is STRING, send strings")
    elif value_type in ("FLOAT", "DOUBLE") and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        raise BadRequest(f"{where} is {json.dumps(value)[:40]}: {key!r} is {value_type}, send finite numbers")


def check_read(payload: Mapping[str, Any], registry: RegistryView) -> None:
    """Raise :class:`BadRequest` unless Feast's handler can answer this read (see the module doc)."""
    entities = payload.get("entities")
    if not isinstance(entities, dict) or not entities:
        raise BadRequest("'entities' must be an object of join key -> list of ids, e.g. {\"item_id\": [1, 2]}")
    types = registry.join_key_types()
    missing = sorted(registry.required_keys(payload) - set(entities))
    if missing:
        raise BadRequest(
            f"the requested features need join key(s) {', '.join(map(repr, missing))}: add them to 'entities'"
        )
    lengths = set()
    for key, values in entities.items():
        if not isinstance(values, list):
            raise BadRequest(f"entity {key!r} must be a list of ids, got {json.dumps(values)[:40]}")
        lengths.add(len(values))
        value_type = types.get(key)
        for position, value in enumerate(values):
            _check_value(key, position, value, value_type)
    if len(lengths) > 1:
        raise BadRequest(
            f"entity lists have different lengths ({sorted(lengths)}): send one value per row for each key"
        )


class EntityCheck:
    """ASGI middleware: a read whose entity values Feast cannot use is answered here, in one line."""

    def __init__(self, app: Callable, registry: RegistryView, path: str = READ_PATH):
        self.app = app
        self.registry = registry
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            payload = parse_body(body)
            await in_thread(check_read, payload, self.registry)
        except BadRequest as exc:
            logger.info("refused a read: %s", exc)
            await answer(send, exc.status, {"detail": str(exc)})
            return
        await self.app(scope, replay(body, receive), send)


def build_app(store, registry_ttl_sec: int = DEFAULT_REGISTRY_TTL_SEC):
    """Feast's feature-server app for ``store`` behind :class:`EntityCheck`, with ``/push`` of a
    feast_bc family written into every pin (:mod:`feast_bc.push_server`)."""
    from feast.feature_server import get_app

    app = PushRoute(get_app(store, registry_ttl_sec=registry_ttl_sec), store.repo_path)
    return EntityCheck(app, RegistryView(store))


def serve(repo, config: ServeConfig) -> None:
    """Run the checked feature server for the feature repo ``repo`` until interrupted."""
    import uvicorn
    from feast import FeatureStore

    yaml = Path(repo) / config.feature_store_yaml if config.feature_store_yaml else None
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
    uvicorn.run(
        build_app(store, config.registry_ttl_sec),
        host=config.host,
        port=config.port,
        access_log=config.access_log,
        log_level="info",
    )
