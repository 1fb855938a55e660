"""Registry.read_through: admission's namespace and ServiceAccount reads come from the
server's informers, and from the store when the informer does not hold the object or when
the cache would refuse (a namespace it still sees terminating) or may not have seen a delete
yet (a namespace deleted through this registry), on a real Registry over
SQLite with real informers whose watch is stopped, so their cache stays as it was."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.server.serviceaccounts import ServiceAccountAdmission
from tests.unit.conftest import eventually


@pytest.fixture
async def frozen(env):
    """The env's registry reading through its informers for namespaces and
    ServiceAccounts, which have synced and then stop following the store."""
    informers = env.ctx.informers
    env.registry.cached = informers.cached
    env.registry.admission.add_mutator("ServiceAccount",
                                       ServiceAccountAdmission(env.registry, wait_seconds=0))
    await env.registry.create(env.res("serviceaccounts"), "default",
                              {"metadata": {"name": "default"}})
    for plural in ("namespaces", "serviceaccounts"):
        inf = informers.informer("", plural)
        await inf.synced.wait()
        await inf.stop()
    return env


def _pod(name: str) -> dict:
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


async def test_objects_the_informers_do_not_hold_are_read_from_the_store(frozen):
    reg = frozen.registry
    await reg.create(frozen.res("namespaces"), None, {"metadata": {"name": "fresh"}})
    await reg.create(frozen.res("serviceaccounts"), "fresh", {"metadata": {"name": "default"}})
    await reg.create(frozen.res("configmaps"), "fresh", {"metadata": {"name": "c"}})
    pod = await reg.create(frozen.res("pods"), "fresh", _pod("p"))
    assert pod["spec"]["serviceAccountName"] == "default"
    with pytest.raises(errors.StatusError) as e:
        await reg.create(frozen.res("configmaps"), "missing", {"metadata": {"name": "c"}})
    assert e.value.code == 404


async def test_a_namespace_the_cache_sees_terminating_is_confirmed_by_the_store(env):
    """The informer saw "again" terminating and stopped there; the store has it finalized and
    made again: a create in it is not refused on the cache's word."""
    reg = env.registry
    reg.cached = env.ctx.informers.cached
    ns_res = env.res("namespaces")
    await reg.create(ns_res, None, {"metadata": {"name": "again"}})
    await reg.delete(ns_res, None, "again")
    inf = env.ctx.informers.informer("", "namespaces")

    def seen_terminating() -> bool:
        ns = inf.get(None, "again")
        return bool(ns and ns["metadata"].get("deletionTimestamp"))
    await eventually(seen_terminating, what="the informer seeing the namespace terminating")
    await inf.stop()
    with pytest.raises(errors.StatusError) as e:
        await reg.create(env.res("configmaps"), "again", {"metadata": {"name": "c"}})
    assert e.value.code == 403 and "being terminated" in e.value.message
    terminating = await reg.get(ns_res, None, "again")
    terminating["spec"]["finalizers"] = []
    await reg.update(ns_res, None, "again", terminating, subresource="finalize")
    assert await reg.try_get(ns_res, None, "again") is None
    await reg.create(ns_res, None, {"metadata": {"name": "again"}})
    await reg.create(env.res("configmaps"), "again", {"metadata": {"name": "c"}})
    assert seen_terminating(), "the informer's copy is still the terminating one"


async def test_a_namespace_deleted_here_is_read_from_the_store(env):
    """The informer saw "bye" active and stopped before its delete: a create in it is refused
    all the same, as upstream's lifecycle admission looks a namespace deleted there up live."""
    reg = env.registry
    reg.cached = env.ctx.informers.cached
    ns_res = env.res("namespaces")
    await reg.create(ns_res, None, {"metadata": {"name": "bye"}})
    inf = env.ctx.informers.informer("", "namespaces")
    await eventually(lambda: inf.get(None, "bye"), what="the informer seeing the namespace")
    await inf.stop()
    await reg.delete(ns_res, None, "bye")
    with pytest.raises(errors.StatusError) as e:
        await reg.create(env.res("configmaps"), "bye", {"metadata": {"name": "c"}})
    assert e.value.code == 403 and "being terminated" in e.value.message
    assert not inf.get(None, "bye")["metadata"].get("deletionTimestamp")
