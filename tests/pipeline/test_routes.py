"""Route templates: ids folded, words kept (pipeline/routes.py)."""

from __future__ import annotations

import uuid

import pytest

from pipeline.routes import RouteCache, is_id, template


@pytest.mark.parametrize("path, route", [
    ("/users/1234", "/users/{id}"),
    ("/users/1234/orders/98?x=1#top", "/users/{id}/orders/{id}"),
    ("/items/0f8fad5b-d9cb-469f-a165-70867728950e", "/items/{id}"),
    ("/items/0F8FAD5BD9CB469FA16570867728950E/edit", "/items/{id}/edit"),
    ("/commits/5f3a9c2e1b", "/commits/{id}"),
    ("/objects/507f1f77bcf86cd799439011", "/objects/{id}"),
    ("/files/1234.json", "/files/{id}"),
    ("/t/aZ3x9_Kq7-Lm2Pw8Rt", "/t/{id}"),
    ("/deadbeef/facade", "/deadbeef/facade"),
    ("/api/v2/users", "/api/v2/users"),
    ("/static/app.css", "/static/app.css"),
    ("/", "/"),
    ("", "/"),
    ("?q=1", "/"),
    ("/a//b/", "/a//b/"),
])
def test_template(path, route):
    assert template(path) == route


def test_ids_and_words():
    assert is_id(str(uuid.uuid4()))
    assert is_id("42") and is_id("-7") and is_id("3.14")
    assert not is_id("v2") and not is_id("users") and not is_id("abcdefab")
    assert not is_id("a-long-readable-slug-name")  # letters, dashes, no digits


def test_cache_is_bounded_and_agrees():
    cache = RouteCache(size=100)
    for i in range(1000):
        assert cache(f"/u/{i}") == "/u/{id}"
        assert len(cache._cache) <= 100
