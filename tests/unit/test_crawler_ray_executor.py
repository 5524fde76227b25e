"""RayExecutor's bookkeeping with a stand-in for Ray: which actor gets which URLs, and when.

Each fetcher actor is a new Ray worker process, which takes a second or more
to answer on a busy node. The crawl must begin as soon as one answers, hand
URLs to the others once they do, and carry on without one that dies starting.
The stand-in completes one pending call at a time, in the order they were
made (a slow actor's start only after two others), whenever the executor
waits with nothing done.
"""
from __future__ import annotations

import sys
import types

import pytest

from crawler.executors import RayExecutor, ThreadExecutor
from crawler.fetch import FetchOptions, FetchResult


class RayError(Exception):
    pass


class Ref:
    """A call's answer: it completes once `after` other calls have (a slow actor's start: after two)."""

    def __init__(self, world, value=None, error=None, after=0):
        self.value, self.error, self.after, self.done = value, error, after, False
        world.queue.append(self)


class Actor:
    def __init__(self, world, index):
        self.world, self.index, self.sent = world, index, []
        self.ready = types.SimpleNamespace(remote=self._ready)
        self.exchange = types.SimpleNamespace(remote=self._exchange)

    def _ready(self):
        behaviour = self.world.starts[self.index]
        return Ref(self.world, True, error=RayError("died starting") if behaviour == "dies" else None,
                   after=2 if behaviour == "slow" else 0)

    def _exchange(self, urls, options):
        self.sent += urls
        return Ref(self.world, [FetchResult(url, status=200, content_type="text/html") for url in urls])


class FakeRay(types.ModuleType):
    """ray.remote / wait / get / kill, over a queue of calls that complete one at a time."""

    def __init__(self, starts):
        super().__init__("ray")
        self.starts, self.queue, self.actors, self.completed = starts, [], [], 0
        self.exceptions = types.SimpleNamespace(RayError=RayError)

    def is_initialized(self):
        return True

    def remote(self, cls):
        world = self

        class Options:
            def options(self, **kwargs):
                return self

            def remote(self):
                world.actors.append(Actor(world, len(world.actors)))
                return world.actors[-1]
        return Options()

    def wait(self, refs, num_returns=1, timeout=None):
        if not any(r.done for r in refs) and timeout != 0:
            pending = [r for r in self.queue if not r.done and r in refs]
            due = [r for r in pending if r.after <= self.completed] or sorted(pending, key=lambda r: r.after)
            if due:  # time passes: the next call due completes
                due[0].done = True
                self.completed += 1
        done = [r for r in refs if r.done]
        return done, [r for r in refs if not r.done]

    def get(self, ref):
        if ref.error:
            raise ref.error
        return ref.value

    def kill(self, actor):
        pass


@pytest.fixture
def fake_ray(monkeypatch):
    def install(*starts):
        world = FakeRay(starts)
        monkeypatch.setitem(sys.modules, "ray", world)
        return world
    return install


def test_the_crawl_begins_on_the_first_actor_to_answer_and_the_slow_one_joins_later(fake_ray):
    world = fake_ray("slow", "quick")
    executor = RayExecutor(fetchers=2, head_start=False)
    executor.start(["http://a.test/"], FetchOptions())
    assert [r.url for r in executor.finished(None)] == ["http://a.test/"]
    assert world.actors[0].sent == [] and world.actors[1].sent == ["http://a.test/"]  # not held by the slow one
    # the slow actor answers while the next URLs are out; from then on it takes its share
    executor.start([f"http://a.test/{n}" for n in range(4)], FetchOptions())
    got = []
    while len(got) < 4:
        got += executor.finished(None)
    executor.start([f"http://a.test/more{n}" for n in range(4)], FetchOptions())
    while len(got) < 8:
        got += executor.finished(None)
    assert world.actors[0].sent, "the actor that answered late never got a URL"
    assert sorted(world.actors[0].sent + world.actors[1].sent) == sorted(["http://a.test/", *(r.url for r in got)])


def test_an_actor_that_dies_starting_leaves_the_crawl_to_the_others_and_all_dead_is_an_error(fake_ray):
    world = fake_ray("dies", "quick")
    executor = RayExecutor(fetchers=2, head_start=False)
    executor.start(["http://a.test/", "http://a.test/b"], FetchOptions())
    got = []
    while len(got) < 2:
        got += executor.finished(None)
    assert world.actors[1].sent == ["http://a.test/", "http://a.test/b"]
    fake_ray("dies", "dies")
    with pytest.raises(RuntimeError, match="every Ray fetcher actor has died"):
        RayExecutor(fetchers=2, head_start=False)


def driver_fetch(fetched):
    """The head start's executor in these tests: threads over a fetch that notes each URL."""
    def fetch(urls, options, threads):
        fetched.extend(urls)
        return [FetchResult(url, status=200, content_type="text/html") for url in urls]
    return lambda: ThreadExecutor(4, fetch)


def test_the_driver_fetches_while_no_actor_has_answered_and_the_actors_take_every_url_after(fake_ray):
    world = fake_ray("slow", "slow")
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver))
    executor.start(["http://a.test/"], FetchOptions())  # no actor has answered: the driver fetches it
    assert [r.url for r in executor.finished(None)] == ["http://a.test/"]
    assert in_driver == ["http://a.test/"] and executor.fetched_in_driver == 1
    got = []
    while not executor._usable:  # the actors answer as time passes
        got += executor.finished(0.01)
    executor.start([f"http://a.test/{n}" for n in range(4)], FetchOptions())
    while len(got) < 4:
        got += executor.finished(None)
    assert in_driver == ["http://a.test/"], "a URL went to the driver after an actor had answered"
    assert sorted(world.actors[0].sent + world.actors[1].sent) == sorted(r.url for r in got)
    assert executor.marks["fetchers_ready"] >= executor.marks["first_request"]
    executor.close()


def test_with_the_head_start_every_actor_dying_starting_is_still_an_error(fake_ray):
    fake_ray("dies", "dies")
    executor = RayExecutor(fetchers=2, head_start=driver_fetch([]))
    executor.start(["http://a.test/"], FetchOptions())
    with pytest.raises(RuntimeError, match="every Ray fetcher actor has died"):
        for _ in range(10):
            executor.finished(None)


def test_a_driver_joining_a_running_ray_fetches_while_it_joins(fake_ray, monkeypatch):
    """In a job (RAY_ADDRESS set) `import ray` and ray.init happen in a thread while the driver fetches."""
    import threading

    world = fake_ray("quick", "quick")
    joining = threading.Event()
    world.is_initialized = lambda: joining.wait(10)  # the join takes until the test lets it end
    monkeypatch.setenv("RAY_ADDRESS", "http://ray-head:10001")
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver))  # returns before Ray is joined
    executor.start(["http://a.test/"], FetchOptions())
    assert [r.url for r in executor.finished(None)] == ["http://a.test/"] and in_driver == ["http://a.test/"]
    assert "ray_connected" not in executor.marks and world.actors == []
    joining.set()
    got = []
    while not executor._usable:
        got += executor.finished(0.05)
    executor.start(["http://a.test/b"], FetchOptions())
    while not got:
        got += executor.finished(None)
    assert [r.url for r in got] == ["http://a.test/b"] and in_driver == ["http://a.test/"]
    assert executor.marks["first_request"] < executor.marks["ray_connected"]
    executor.close()


def test_the_driver_fetches_at_most_its_share_and_the_rest_waits_for_an_actor(fake_ray):
    world = fake_ray("slow", "slow")
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver), head_start_urls=2)
    executor.start(["http://a.test/1", "http://a.test/2", "http://a.test/3"], FetchOptions())
    got = []
    while len(got) < 3:
        got += executor.finished(None)
    assert in_driver == ["http://a.test/1", "http://a.test/2"] and executor.fetched_in_driver == 2
    assert world.actors[0].sent + world.actors[1].sent == ["http://a.test/3"]  # it waited for an actor
    executor.close()
