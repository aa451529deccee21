"""The Redis connection string of a profile: where it comes from and why it cannot work.

`feast-bc init` writes ``connection_string: ${FEAST_BC_REDIS}`` unless given a URL; an unset variable
or a string naming no ``host:port`` is refused in one line where it enters -- at `feast apply`
(:mod:`feast_bc.apply_guard`) and before a materialization writes (:mod:`feast_bc.materialize.store_errors`).
"""

from __future__ import annotations

#: Environment variable holding the Redis connection string of the Redis profile.
REDIS_ENV_VAR = "FEAST_BC_REDIS"


def redis_connection_problem(online_store: dict, where: str) -> str | None:
    """Why a Redis online-store configuration cannot work (unset ``$FEAST_BC_REDIS`` etc.), or None."""
    if (online_store or {}).get("type") != "redis":
        return None
    conn = online_store.get("connection_string")
    if conn is None:
        return None  # Feast's default (localhost:6379)
    conn = str(conn)
    nodes = [c for c in conn.split(",") if "=" not in c]
    if (
        "${" in conn
        or not conn.strip()
        or not nodes
        or any(":" not in n or not n.rsplit(":", 1)[1].isdigit() for n in nodes)
    ):
        hint = (
            f"${REDIS_ENV_VAR} is not set: export {REDIS_ENV_VAR}=host:6379,db=0[,password=...]"
            if "${" + REDIS_ENV_VAR + "}" in conn or f"${REDIS_ENV_VAR}" in conn or not conn.strip()
            else "expected host:port[,db=N][,password=...]"
        )
        return f"{where}: the Redis connection string {conn!r} names no host:port -- {hint}"
    return None
