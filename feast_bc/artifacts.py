"""Reading and writing artifacts so that nothing unverified is ever used.

Every artifact is pinned in the manifest by size and sha256. Readers check both *before*
interpreting a single byte: a tampered, truncated or substituted file (including a pickle posing
as a transform) is refused without being parsed, let alone executed. Transforms are safetensors
whose header is validated by hand first (dtype, 2-D shape, bounded dimensions, offsets that fit
the file) so a crafted header cannot make us allocate absurd amounts of memory.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import safetensors.numpy

from feast_bc.atomic import sha256_bytes, sha256_file, write_content_addressed
from feast_bc.errors import ChecksumMismatchError, CorruptArtifactError, MissingArtifactError
from feast_bc.manifest import ArtifactRef, TransformArtifact
from feast_bc.transforms import MAX_DIM, BackwardTransform, transform_class

TRANSFORM_FORMAT = "feast_bc.transform/1"
_MAX_HEADER_BYTES = 1 << 20
_DTYPES = {"F32": np.float32, "F64": np.float64}


def _check_present_and_sized(path: Path, ref: ArtifactRef, origin: str) -> None:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise MissingArtifactError(
            f"{origin}: artifact {ref.path} is missing at {path}; it was published with sha256 "
            f"{ref.sha256[:12]}... -- restore it or publish again"
        ) from None
    if size != ref.size_bytes:
        raise ChecksumMismatchError(
            f"{origin}: artifact {path} has {size} bytes but was published with {ref.size_bytes} "
            "(truncated or replaced); refusing to use it"
        )


def read_verified(path: Path, ref: ArtifactRef, *, origin: str) -> bytes:
    """The bytes of ``path`` if and only if they are exactly what was published."""
    _check_present_and_sized(path, ref, origin)
    data = Path(path).read_bytes()
    digest = sha256_bytes(data)
    if digest != ref.sha256:
        raise ChecksumMismatchError(
            f"{origin}: artifact {path} fails its checksum (published {ref.sha256[:12]}..., "
            f"found {digest[:12]}...); refusing to use it"
        )
    return data


_verified_lock = threading.Lock()
_verified: dict[tuple, bool] = {}


def verify_file(path: Path, ref: ArtifactRef, *, origin: str) -> None:
    """Hash a (possibly large) file once per process, re-hashing if the file changes on disk."""
    _check_present_and_sized(path, ref, origin)
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, ref.sha256)
    with _verified_lock:
        if _verified.get(key):
            return
    digest = sha256_file(path)
    if digest != ref.sha256:
        raise ChecksumMismatchError(
            f"{origin}: artifact {path} fails its checksum (published {ref.sha256[:12]}..., "
            f"found {digest[:12]}...); refusing to use it"
        )
    with _verified_lock:
        _verified[key] = True


# --------------------------------------------------------------------------- transforms
def encode_transform(transform: BackwardTransform) -> bytes:
    tensors = {name: np.ascontiguousarray(arr) for name, arr in transform.to_tensors().items()}
    metadata = {
        "format": TRANSFORM_FORMAT,
        "kind": transform.kind,
        "in_dim": str(transform.in_dim),
        "out_dim": str(transform.out_dim),
    }
    return safetensors.numpy.save(tensors, metadata=metadata)


def _parse_header(data: bytes, origin: str) -> tuple[dict, dict]:
    if len(data) < 8:
        raise CorruptArtifactError(f"{origin}: {len(data)} bytes is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise CorruptArtifactError(
            f"{origin}: not a safetensors file (declared header of {header_len} bytes in a {len(data)}-byte file)"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptArtifactError(f"{origin}: not a safetensors file (header is not JSON: {exc})") from None
    except RecursionError:
        raise CorruptArtifactError(f"{origin}: not a safetensors file (header nested too deeply)") from None
    if not isinstance(header, dict):
        raise CorruptArtifactError(f"{origin}: safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    body = len(data) - 8 - header_len
    for name, spec in header.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise CorruptArtifactError(f"{origin}: malformed entry for tensor {name!r}")
        dtype = spec["dtype"]
        if dtype not in _DTYPES:
            raise CorruptArtifactError(f"{origin}: tensor {name!r} has dtype {dtype}; transforms must be F32 or F64")
        shape = spec["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(d, int) and 1 <= d <= MAX_DIM for d in shape)
        ):
            raise CorruptArtifactError(
                f"{origin}: tensor {name!r} has shape {shape}; expected 2-D with each dimension in 1..{MAX_DIM}"
            )
        start, end = spec["data_offsets"]
        need = shape[0] * shape[1] * np.dtype(_DTYPES[dtype]).itemsize
        if not (0 <= start <= end <= body) or end - start != need:
            raise CorruptArtifactError(
                f"{origin}: tensor {name!r} declares {need} bytes at offsets {start}..{end} but "
                f"the file holds {body} data bytes (truncated or forged)"
            )
    return header, metadata


def decode_transform(data: bytes, *, origin: str, expected: TransformArtifact | None = None) -> BackwardTransform:
    """Parse safetensors bytes (already checksum-verified) into a transform of a known kind."""
    _, metadata = _parse_header(data, origin)
    if metadata.get("format") != TRANSFORM_FORMAT:
        raise CorruptArtifactError(
            f"{origin}: not a feast_bc transform (format {metadata.get('format')!r}, expected {TRANSFORM_FORMAT!r})"
        )
    kind = metadata.get("kind", "")
    cls = transform_class(kind)
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptArtifactError(f"{origin}: unreadable safetensors payload: {exc}") from None
    transform = cls.from_tensors(tensors)
    if expected is not None and (
        expected.kind != kind or (transform.in_dim, transform.out_dim) != (expected.in_dim, expected.out_dim)
    ):
        raise CorruptArtifactError(
            f"{origin}: holds a {kind} transform {transform.in_dim}->{transform.out_dim}, but the manifest "
            f"records {expected.kind} {expected.in_dim}->{expected.out_dim}"
        )
    return transform


def load_transform(path: Path, ref: TransformArtifact, *, origin: str) -> BackwardTransform:
    return decode_transform(read_verified(path, ref, origin=origin), origin=origin, expected=ref)


def write_transform(directory: Path, stem: str, transform: BackwardTransform) -> tuple[Path, str, int]:
    """Write a transform as a new content-addressed safetensors file; return (path, sha256, size)."""
    data = encode_transform(transform)
    return write_content_addressed(directory, stem, ".safetensors", lambda tmp: tmp.write_bytes(data))
