"""Where fetches run: an event loop in this process, Ray actors on a cluster, or plain threads.

Each is fed URLs with start() and hands results back with finished(), as they
come, so the driver's loop is the same for a laptop crawl and a KubeRay job.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

from .fetch import FetchOptions, FetchResult, PageFetcher, fetch_batch

BatchFetcher = Callable[[Sequence[str], FetchOptions, int], "list[FetchResult]"]


def _drain(results: "queue.SimpleQueue[FetchResult]", timeout: Optional[float]) -> list[FetchResult]:
    """The results waiting in `results`, after waiting up to `timeout` for the first."""
    try:
        done = [results.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            done.append(results.get_nowait())
        except queue.Empty:
            return done


class StreamingFetcher:
    """Runs in an event loop: fetches every URL it is given at once, keeps what is done.

    The loop of AsyncExecutor and each Ray fetcher actor run one of these.
    """

    def __init__(self, on_done: Optional[Callable[[FetchResult], None]] = None) -> None:
        self._fetcher: Optional[PageFetcher] = None
        self._tasks: set = set()  # the loop keeps only weak references to tasks
        self._done: list[FetchResult] = []
        self._wake = asyncio.Event()
        self._on_done = on_done or self._keep

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        if self._fetcher is None:
            self._fetcher = PageFetcher(options)  # the first call brings the options of the crawl
        for url in urls:
            task = asyncio.ensure_future(self._fetch(url))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def collect(self) -> list[FetchResult]:
        """What is done since the last call; waits for one result if there is none yet and any in flight."""
        if not self._done and self._tasks:
            await self._wake.wait()
        self._wake.clear()
        done, self._done = self._done, []
        return done

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._fetcher is not None:
            await self._fetcher.close()

    async def _fetch(self, url: str) -> None:
        try:
            result = await self._fetcher.fetch(url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a fetch must not lose the URL: it is reported failed
            result = FetchResult(url, error=f"fetch failed: {type(exc).__name__}: {exc}")
        self._on_done(result)

    def _keep(self, result: FetchResult) -> None:
        self._done.append(result)
        self._wake.set()


class AsyncExecutor:
    """Local mode: an asyncio event loop in a thread of this process, one aiohttp session."""

    def __init__(self) -> None:
        self.startup_s: Optional[float] = None  # from creation to the first request
        self._created = time.monotonic()
        self._results: "queue.SimpleQueue[FetchResult]" = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crawl-fetch", daemon=True)
        self._thread.start()
        self._fetcher: Optional[StreamingFetcher] = None

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._created
        self._loop.call_soon_threadsafe(self._start, list(urls), options)

    def finished(self, timeout: Optional[float]) -> list[FetchResult]:
        return _drain(self._results, timeout)

    def close(self) -> None:
        if self._fetcher is not None:
            asyncio.run_coroutine_threadsafe(self._fetcher.close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def _start(self, urls: list[str], options: FetchOptions) -> None:  # in the loop's thread
        if self._fetcher is None:
            self._fetcher = StreamingFetcher(on_done=self._results.put)
        self._fetcher.start(urls, options)


class ThreadExecutor:
    """Threads, one URL each, over a blocking fetch function: for fakes in tests, and any blocking fetch."""

    def __init__(self, concurrency: int, fetch: BatchFetcher = fetch_batch) -> None:
        self.startup_s: Optional[float] = 0.0
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawl")
        self._fetch = fetch
        self._results: "queue.SimpleQueue[FetchResult]" = queue.SimpleQueue()

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        for url in urls:
            self._pool.submit(self._fetch_one, url, options)

    def finished(self, timeout: Optional[float]) -> list[FetchResult]:
        return _drain(self._results, timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_one(self, url: str, options: FetchOptions) -> None:
        try:
            result = self._fetch([url], options, 1)[0]
        except Exception as exc:  # a lost worker: its URL failed, the crawl goes on
            result = FetchResult(url, error=f"worker failed: {exc}")
        self._results.put(result)


class FetcherActor:
    """A Ray actor (async): fetches and parses the URLs it is sent; the driver collects what is done."""

    def __init__(self) -> None:
        self._fetcher = StreamingFetcher()

    async def ready(self) -> bool:
        import aiohttp  # noqa: F401  (imported now rather than on the first request)

        return True

    async def start(self, urls: list[str], options: FetchOptions) -> None:
        self._fetcher.start(urls, options)

    async def collect(self) -> list[FetchResult]:
        return await self._fetcher.collect()


class RayExecutor:
    """Ray mode: a pool of long-lived fetcher actors, each fetching many URLs at once in its event loop.

    The driver sends each new batch of URLs to the actors with the fewest in
    flight, and keeps one collect() call waiting on every busy actor, so
    results stream back in small batches as they are done. The actors are I/O
    bound: each asks for a fraction of a CPU, and SPREAD puts them on different
    nodes of a cluster. An actor that dies takes its URLs in flight with it:
    they are reported failed and the others carry on.
    """

    def __init__(self, fetchers: int = 2, address: Optional[str] = None, num_cpus: float = 0.5) -> None:
        import ray  # only Ray mode needs Ray installed

        self._ray = ray
        self._created = time.monotonic()
        self.startup_s: Optional[float] = None  # from ray.init to the first request
        self._started_ray = False
        if not ray.is_initialized():
            # In a Ray job RAY_ADDRESS is set and this joins the cluster;
            # elsewhere it starts a local Ray for this process.
            ray.init(address=address, runtime_env=_workers_runtime_env(), logging_level="WARNING")
            self._started_ray = True
        actor = ray.remote(FetcherActor).options(num_cpus=num_cpus, scheduling_strategy="SPREAD")
        self._actors = [actor.remote() for _ in range(fetchers)]
        ray.get([a.ready.remote() for a in self._actors])
        self._in_flight: list[set[str]] = [set() for _ in self._actors]
        self._collecting: dict = {}  # ObjectRef of a collect() call -> actor index
        self._lost: set[int] = set()

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._created
        shares: dict[int, list[str]] = {}
        for url in urls:
            index = self._least_busy()
            shares.setdefault(index, []).append(url)
            self._in_flight[index].add(url)
        for index, share in shares.items():
            self._actors[index].start.remote(share, options)
            if index not in self._collecting.values():
                self._collecting[self._actors[index].collect.remote()] = index

    def finished(self, timeout: Optional[float]) -> list[FetchResult]:
        if not self._collecting:
            return []
        refs = list(self._collecting)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if rest and ready:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        done: list[FetchResult] = []
        for ref in ready:
            index = self._collecting.pop(ref)
            done += self._results_of(ref, index)
            if self._in_flight[index] and index not in self._lost:
                self._collecting[self._actors[index].collect.remote()] = index
        return done

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started_ray:
            self._ray.shutdown()

    def _least_busy(self) -> int:
        alive = [i for i in range(len(self._actors)) if i not in self._lost]
        if not alive:
            raise RuntimeError("every Ray fetcher actor has died; see the Ray logs (ray logs cluster) for why")
        return min(alive, key=lambda i: len(self._in_flight[i]))

    def _results_of(self, ref, index: int) -> list[FetchResult]:
        try:
            results = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the actor died: its URLs in flight failed
            self._lost.add(index)
            failed = [FetchResult(url, error=f"fetcher actor lost: {type(exc).__name__}")
                      for url in sorted(self._in_flight[index])]
            self._in_flight[index].clear()
            return failed
        for result in results:
            self._in_flight[index].discard(result.url)
        return results


def _workers_runtime_env() -> Optional[dict]:
    """What Ray workers need to import this package.

    A Ray job already ships it in its working_dir (see crawler.jobs); a driver
    started any other way sends the package along itself.
    """
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # set by Ray for a job's driver
        return None
    package_dir = os.path.dirname(os.path.abspath(__file__))
    return {"py_modules": [package_dir], "excludes": ["__pycache__", "*.pyc"]}
