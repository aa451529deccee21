"""Compute-on-read versions: an OnDemandFeatureView that applies the composed matrix per request.

For versions that are rarely read, storing a copy per entity is wasteful. Such a version is
served by an ODFV over the latest view whose UDF multiplies by M = B_{j+1}...B_k at request time.
The UDF runs in the *consumer's* process (or the feature server), so it must not import feast_bc:
the float32 matrix travels inside the UDF text itself (base64, sha256-checked on first use) and the
code needs only numpy, which every Feast installation has. It is decoded once per UDF object
(cached in a default argument) and applied to all rows of a request with one matmul.

Cost: the registry grows by about 1.4 x the matrix size per on-read version (4 bytes x d_k x d_j,
base64), and every read pays one small matmul -- measured in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np


def onread_udf_source(function_name: str, matrix: np.ndarray, aliases: tuple[str, ...] = ()) -> str:
    """Self-contained python-mode UDF text computing ``embedding @ matrix.T`` for each row.

    ``aliases``: the projection names a consumer reads the output under with
    ``full_feature_names=True`` (the pin's, the view's). Feast's python-mode ODFVs select the UDF's
    output by the *requested* name, which is ``<projection>__embedding`` under full feature names;
    a UDF returning only ``embedding`` then returns nothing at all (measured on Feast 0.67). The
    UDF returns the one list under every such name."""
    m = np.ascontiguousarray(matrix, dtype="<f4")
    out_dim, in_dim = m.shape
    payload = m.tobytes()
    digest = hashlib.sha256(payload).hexdigest()
    b64 = base64.b64encode(payload).decode()
    names = ("embedding", *(f"{alias}__embedding" for alias in aliases))
    return (
        f"def {function_name}(inputs, _cache={{}}):\n"
        f"    import numpy as np\n"
        f"    m = _cache.get('m')\n"
        f"    if m is None:\n"
        f"        import base64, hashlib\n"
        f"        raw = base64.b64decode('{b64}')\n"
        f"        if hashlib.sha256(raw).hexdigest() != '{digest}':\n"
        f"            raise ValueError('feast_bc on-read transform of {function_name} is corrupted')\n"
        f"        m = _cache['m'] = np.frombuffer(raw, dtype='<f4').reshape({out_dim}, {in_dim}).T.copy()\n"
        f"    names = {names!r}\n"
        f"    values = inputs['embedding']\n"
        f"    try:\n"
        f"        z = np.asarray(values, dtype=np.float32)\n"
        f"    except (TypeError, ValueError):\n"
        f"        z = None\n"
        f"    if z is not None and z.ndim == 2 and z.shape[1] == {in_dim}:\n"
        f"        out = (z @ m).tolist()  # every entity present: one matmul\n"
        f"        return {{name: out for name in names}}\n"
        f"    out = [None] * len(values)\n"
        f"    rows = [i for i, v in enumerate(values) if v is not None and len(v) == {in_dim}]\n"
        f"    if rows:\n"
        f"        z = np.asarray([values[i] for i in rows], dtype=np.float32) @ m\n"
        f"        for i, vec in zip(rows, z):\n"
        f"            out[i] = vec.tolist()\n"
        f"    for i, v in enumerate(values):\n"
        f"        if v is not None and len(v) != {in_dim}:\n"
        f"            # only Feast's apply-time schema inference sends vectors of another length\n"
        f"            out[i] = [0.0] * {out_dim}\n"
        f"    return {{name: out for name in names}}\n"
    )
