"""Jobs on the wire: JSON, never pickle, and only in the shape the queue writes.

arq's default serializer is pickle: anyone who can write to Redis would run code in the worker.
The payload is only the job's id (and its shop): its input lives in Postgres, where the worker
reads it when it claims the job.
"""

from __future__ import annotations

from typing import Any

import orjson


def serialize(obj: Any) -> bytes:
    # default=str turns whatever arq puts in a result (an exception, say) into text, not pickle.
    return orjson.dumps(obj, default=str)


# What arq reads from a job without guarding its type: `t` (the try count) and `et` (the enqueue
# time, in ms) are used outside arq's error handling, so a wrong type there would raise out of
# the worker's poll loop and end the process (and every process that picks the entry up next).
_JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "f": (str,),
    "a": (list,),
    "k": (dict,),
    "t": (int, type(None)),
    "et": (int, float),
}
LATEST_TIMESTAMP_MS = 253_402_300_799_000  # 9999-12-31: what datetime can represent


def deserialize(data: bytes) -> Any:
    """JSON, and a job only in the shape `serialize` writes; anything else raises, which arq
    turns into a failed entry (logged and removed) instead of a dead worker."""
    value = orjson.loads(data)
    if isinstance(value, dict):
        for key, types in _JOB_FIELDS.items():
            field = value.get(key)
            if key in value and (not isinstance(field, types) or isinstance(field, bool)):
                raise ValueError(f"malformed queue entry: field {key!r}")
        if "et" in value and not 0 <= value["et"] <= LATEST_TIMESTAMP_MS:
            raise ValueError("malformed queue entry: field 'et'")
    return value
