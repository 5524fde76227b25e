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


def test_the_driver_fetches_while_no_actor_has_answered_and_the_actors_take_every_url_after(fake_ray, monkeypatch):
    world = fake_ray("slow", "slow")
    monkeypatch.setenv("RAY_ADDRESS", "http://ray-head:10001")  # a job's driver: Ray is joined past the first URLs
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver))
    executor.start(["http://a.test/"], FetchOptions())  # no actor has answered: the driver fetches it
    assert [r.url for r in executor.finished(None)] == ["http://a.test/"]
    executor.start(["http://a.test/a"], FetchOptions())  # past the first URLs: Ray is joined, the driver fetches it
    assert [r.url for r in executor.finished(None)] == ["http://a.test/a"]
    assert in_driver == ["http://a.test/", "http://a.test/a"] and executor.fetched_in_driver == 2
    got = []
    while not executor._usable:  # the actors answer as time passes
        got += executor.finished(0.01)
    executor.start([f"http://a.test/{n}" for n in range(4)], FetchOptions())
    while len(got) < 4:
        got += executor.finished(None)
    assert in_driver == ["http://a.test/", "http://a.test/a"], "a URL went to the driver after an actor had answered"
    assert sorted(world.actors[0].sent + world.actors[1].sent) == sorted(r.url for r in got)
    assert executor.marks["fetchers_ready"] >= executor.marks["first_request"]
    executor.close()


def test_with_the_head_start_every_actor_dying_starting_is_still_an_error(fake_ray):
    fake_ray("dies", "dies")
    executor = RayExecutor(fetchers=2, head_start=driver_fetch([]))
    executor.start(["http://a.test/"], FetchOptions())
    executor.start(["http://a.test/b"], FetchOptions())
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
    executor.start(["http://a.test/a"], FetchOptions())  # the crawl goes past its start URL: Ray is joined
    assert [r.url for r in executor.finished(None)] == ["http://a.test/a"]
    assert "ray_connected" not in executor.marks and world.actors == []
    joining.set()
    got = []
    while not executor._usable:
        got += executor.finished(0.05)
    executor.start(["http://a.test/b"], FetchOptions())
    while not got:
        got += executor.finished(None)
    assert [r.url for r in got] == ["http://a.test/b"] and in_driver == ["http://a.test/", "http://a.test/a"]
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


def own_ray(world, monkeypatch):
    """The stand-in as a Ray this process starts itself: ray.init waits until the test lets it end."""
    import threading

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    world.may_start, world.threads = threading.Event(), {}
    world.is_initialized = lambda: False
    world.init = lambda **kwargs: (world.threads.setdefault("init", threading.current_thread()),
                                   world.may_start.wait(10))
    world.shutdown = lambda: world.threads.setdefault("shutdown", threading.current_thread())
    return world


def test_a_crawl_that_ends_before_its_own_ray_is_up_does_not_wait_for_it(fake_ray, monkeypatch):
    """A Ray of our own starts beside the crawl, in a thread that keeps it: Ray's processes die with the
    thread that started them (Linux), so the same thread stops it, once it is up, after close()."""
    world = own_ray(fake_ray("slow", "slow"), monkeypatch)
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver))
    executor.start(["http://a.test/"], FetchOptions())  # Ray of our own is already starting beside the crawl
    executor.start(["http://a.test/a"], FetchOptions())
    while len(in_driver) < 2 or executor._driver_pending:
        executor.finished(0.05)
    assert in_driver == ["http://a.test/", "http://a.test/a"]
    executor.close()  # returns at once: Ray is still starting
    assert "shutdown" not in world.threads and executor._joining.is_alive()
    world.may_start.set()  # up now: the keeper stops it, from the thread that started it
    executor._joining.join(10)
    assert world.threads["shutdown"] is world.threads["init"] is not None
    assert world.threads["init"] is not __import__("threading").main_thread()


def test_a_crawl_on_its_own_ray_stops_that_ray_in_close(fake_ray, monkeypatch):
    world = own_ray(fake_ray("quick", "quick"), monkeypatch)
    world.may_start.set()
    executor = RayExecutor(fetchers=2, head_start=driver_fetch([]))
    executor.start(["http://a.test/"], FetchOptions())
    executor.start(["http://a.test/a"], FetchOptions())
    got = []
    while not executor._usable:
        got += executor.finished(0.05)
    executor.start(["http://a.test/b"], FetchOptions())
    while len(got) < 3:
        got += executor.finished(None)
    assert sorted(r.url for r in got) == ["http://a.test/", "http://a.test/a", "http://a.test/b"]
    assert world.actors[0].sent + world.actors[1].sent == ["http://a.test/b"]
    executor.close()  # Ray is up: close waits for its shutdown
    assert world.threads["shutdown"] is world.threads["init"] and not executor._joining.is_alive()


def test_a_crawl_of_its_start_urls_alone_never_imports_ray(fake_ray, monkeypatch):
    """One page at --depth 0 in a job: the driver fetches it; joining Ray beside it would only slow it
    (the import holds the interpreter's lock in bursts), and its actors would never be asked."""
    world = fake_ray("quick", "quick")
    world.threads = {}
    world.is_initialized = lambda: pytest.fail("Ray was joined for a crawl of its start URLs alone")
    monkeypatch.setenv("RAY_ADDRESS", "http://ray-head:10001")
    in_driver = []
    executor = RayExecutor(fetchers=2, head_start=driver_fetch(in_driver))
    executor.start(["http://a.test/", "http://a.test/b"], FetchOptions())
    got = []
    while len(got) < 2:
        got += executor.finished(None)
    assert executor.finished(None) == []  # nothing out, nothing waits for Ray: no wait either
    executor.close()
    assert in_driver == ["http://a.test/", "http://a.test/b"] and "ray_imported" not in executor.marks
    assert world.actors == [] and "init" not in world.threads
