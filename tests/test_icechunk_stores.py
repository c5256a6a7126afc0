"""The installed icechunk's API, as the sidecar will use it (issue 13).

Checks, over a local directory and over the S3 test server (moto):
``Repository.create`` / ``open``, ``writable_session(branch)``, zarr-python
writing through ``session.store``, ``commit(message) -> snapshot id``,
``readonly_session(branch= | tag= | snapshot_id=)``, and that two sessions
committing to the same branch from the same parent conflict
(``icechunk.ConflictError``) unless rebased.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import icechunk
import numpy as np
import pytest
import zarr
from servers import TestServer
from servers.fixtures import fresh, s3_server
from test_remote_stores import make_bucket

__all__ = ["s3_server"]


def local_storage(tmp_path: Path) -> icechunk.Storage:
    return icechunk.local_filesystem_storage(str(tmp_path / "repo"))


def s3_storage(server: TestServer) -> icechunk.Storage:
    ep = fresh(server)
    make_bucket(ep, "zb-icechunk")
    return icechunk.s3_storage(
        bucket="zb-icechunk",
        prefix=f"repo-{uuid.uuid4().hex[:8]}",
        region=ep.options["region"],
        endpoint_url=ep.url,
        allow_http=True,
        access_key_id=ep.options["access_key_id"],
        secret_access_key=ep.options["secret_access_key"],
        force_path_style=True,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> icechunk.Storage:
    if request.param == "local":
        return local_storage(tmp_path)
    return s3_storage(request.getfixturevalue("s3_server"))


def test_create_write_commit_and_read_by_branch_tag_and_snapshot(storage: icechunk.Storage) -> None:
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    assert not session.read_only
    root = zarr.group(session.store, attributes={"v": 1})
    arr = root.create_array("a", shape=(20,), chunks=(5,), dtype="<i8")
    arr[:] = np.arange(20)
    assert session.has_uncommitted_changes
    first = session.commit("first write")
    assert isinstance(first, str) and first
    assert repo.lookup_branch("main") == first

    session = repo.writable_session("main")
    zarr.open_array(session.store, path="a", mode="r+")[:5] = -1
    second = session.commit("second write")
    assert second != first
    repo.create_tag("v1", first)

    reopened = icechunk.Repository.open(storage)
    head = zarr.open_array(reopened.readonly_session(branch="main").store, path="a", mode="r")
    np.testing.assert_array_equal(head[:], np.r_[np.full(5, -1), np.arange(5, 20)])
    for session in (reopened.readonly_session(tag="v1"), reopened.readonly_session(snapshot_id=first)):
        assert session.read_only
        np.testing.assert_array_equal(zarr.open_array(session.store, path="a", mode="r")[:], np.arange(20))
    # A read-only session's store refuses writes.
    with pytest.raises(Exception, match="read.only|read-only|readonly"):
        zarr.open_array(reopened.readonly_session(tag="v1").store, path="a", mode="r+")[:] = 0


def test_concurrent_commits_on_a_branch_conflict(storage: icechunk.Storage) -> None:
    repo = icechunk.Repository.create(storage)
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="a", shape=(10,), chunks=(5,), dtype="u1")[:] = 0
    session.commit("init")

    one = repo.writable_session("main")
    two = repo.writable_session("main")
    zarr.open_array(one.store, path="a", mode="r+")[:5] = 1
    zarr.open_array(two.store, path="a", mode="r+")[:5] = 2
    one.commit("one")
    with pytest.raises(icechunk.ConflictError) as err:
        two.commit("two")
    assert err.value.expected_parent != err.value.actual_parent
    # The winning commit is what the branch holds.
    head = zarr.open_array(repo.readonly_session(branch="main").store, path="a", mode="r")
    np.testing.assert_array_equal(head[:], np.r_[np.full(5, 1), np.zeros(5)].astype("u1"))
