"""Online-store errors of a materialization, as one line an operator can act on.

The bulk writers talk to Redis and SQLite directly, so their raw client errors (``OOM``, a refused
password, a lost connection, ``database is locked``, a full volume, a dropped table) reach the
engines; :func:`explain_store_error` names what happened, what was kept and what to run. A Redis
profile whose connection string cannot work is refused before anything is read
(:func:`check_store_config`).
"""

from __future__ import annotations

import redis.exceptions as rex

from feast_bc.errors import ConfigurationError, OnlineStoreFullError, OnlineStoreUnavailableError
from feast_bc.feast_compat import sqlite_error_kind
from feast_bc.redis_profile import redis_connection_problem


def check_store_config(repo_config) -> None:
    """Refuse a Redis profile whose connection string cannot work (e.g. ``$FEAST_BC_REDIS`` unset)
    with one line, instead of the ``KeyError: 'port'`` Feast's Redis client would raise."""
    online = repo_config.online_store
    config = {"type": getattr(online, "type", None), "connection_string": getattr(online, "connection_string", None)}
    problem = redis_connection_problem(config, "online_store of the feature_store yaml")
    if problem:
        raise ConfigurationError(problem)


def explain_store_error(exc: Exception, repo_config, what: str) -> Exception:
    """Turn a raw client error of the online store into one line an operator can act on (``what``:
    the view, or the family and views of a fused pass, being materialized)."""
    store = getattr(repo_config.online_store, "connection_string", None) or repo_config.online_store.type
    where = str(store).split(",")[0]
    if isinstance(exc, rex.ResponseError) and str(exc).startswith("OOM"):
        err = OnlineStoreFullError(
            f"Redis at {where} ran out of memory while materializing {what} ({exc}): it reached its "
            "maxmemory and its eviction policy frees nothing. Every entity written so far is complete (one "
            "HSET per entity; values read are old or new, never partial), the rest keep their previous "
            "values. Free memory (raise maxmemory, or retire versions nobody reads with `feast-bc retire`), "
            "then run `feast materialize` again: it writes exactly what is still missing or older and completes"
        )
    elif isinstance(exc, rex.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        err = OnlineStoreUnavailableError(
            f"Redis at {where} refused the credentials of the connection string while materializing "
            f"{what} ({exc}); fix password/username in feature_store.yaml or $FEAST_BC_REDIS"
        )
    elif isinstance(exc, (rex.ConnectionError, rex.TimeoutError, ConnectionError, TimeoutError)):
        err = OnlineStoreUnavailableError(
            f"Redis at {where} became unreachable while materializing {what} ({exc}). Values "
            "already written are complete per entity; run `feast materialize` again once Redis is back."
        )
    elif sqlite_error_kind(exc) is not None:
        kind, text = sqlite_error_kind(exc), str(exc)
        where = getattr(repo_config.online_store, "path", None) or where
        if kind == "locked":
            err = OnlineStoreUnavailableError(
                f"the SQLite online store {where} is locked by another process while materializing {what} ({text}): "
                "another materialization, or a process holding a write transaction on it. Nothing of this batch was "
                "written; run `feast materialize` again once it is done"
            )
        elif kind == "full":
            err = OnlineStoreFullError(
                f"the SQLite online store {where} could not write while materializing {what} ({text}): its volume is "
                "full, a file size limit was reached, or the disk failed. Every batch written so far is complete (one "
                "transaction per batch), the rest keep their previous values. Free space (or fix the volume), then "
                "run `feast materialize` again"
            )
        else:
            err = OnlineStoreUnavailableError(
                f"the SQLite online store {where} has no table for {what} ({text}): it was torn down, replaced or "
                "deleted under the registry. Run `feast apply` (it creates the tables the registry records again), "
                "then `feast materialize`"
            )
    else:
        return exc
    err.__cause__ = exc
    return err
