import pytest

from service import queue


def test_plain_redis_url() -> None:
    s = queue.redis_settings("redis://127.0.0.1:6380")
    assert (s.host, s.port, s.database, s.ssl, s.password, s.username) == (
        "127.0.0.1",
        6380,
        0,
        False,
        None,
        None,
    )


def test_tls_user_password_and_db() -> None:
    s = queue.redis_settings("rediss://default:s3cr%40t@fly-redis.upstash.io:6380/2")
    assert s.ssl is True
    assert (s.host, s.port, s.database) == ("fly-redis.upstash.io", 6380, 2)
    assert s.username == "default"
    assert s.password in ("s3cr@t", "s3cr%40t")


def test_default_port_and_password_only() -> None:
    s = queue.redis_settings("redis://:pw@redis.internal/5")
    assert (s.host, s.port, s.database, s.password) == ("redis.internal", 6379, 5, "pw")


def test_connect_carries_tls_and_db_into_the_client() -> None:
    pool = queue.connect("rediss://user:pw@example.invalid:6390/3")
    kwargs = pool.connection_pool.connection_kwargs
    assert kwargs["db"] == 3 and kwargs["username"] == "user" and kwargs["password"] == "pw"
    assert "SSL" in pool.connection_pool.connection_class.__name__


def test_json_on_the_wire_never_pickle() -> None:
    import pickle

    assert queue.deserialize(queue.serialize({"a": [1, "b"]})) == {"a": [1, "b"]}
    assert queue.serialize(ValueError("boom")) == b'"boom"'
    with pytest.raises(ValueError):
        queue.deserialize(pickle.dumps({"a": 1}))


@pytest.mark.parametrize(
    "entry",
    [
        {"t": "1", "f": "echo", "a": [], "k": {}, "et": 1},
        {"t": 1, "f": "echo", "a": [], "k": {}, "et": "yesterday"},
        {"t": 1, "f": "echo", "a": [], "k": {}, "et": 1e300},
        {"t": 1, "f": "echo", "a": [], "k": {}, "et": -1},
        {"t": True, "f": "echo", "a": [], "k": {}, "et": 1},
        {"t": 1, "f": 7, "a": [], "k": {}, "et": 1},
        {"t": 1, "f": "echo", "a": "abc", "k": {}, "et": 1},
        {"t": 1, "f": "echo", "a": [], "k": "abc", "et": 1},
    ],
)
def test_a_queue_entry_of_the_wrong_shape_is_refused(entry: dict[str, object]) -> None:
    """arq reads `t` and `et` outside its error handling: a wrong type killed the worker."""
    import orjson

    with pytest.raises(ValueError, match="malformed queue entry"):
        queue.deserialize(orjson.dumps(entry))
    well_formed = {"t": None, "f": "echo", "a": ["id"], "k": {}, "et": 1_700_000_000_000}
    assert queue.deserialize(orjson.dumps(well_formed)) == well_formed
