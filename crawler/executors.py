"""Where fetches run: an event loop in this process, Ray actors on a cluster, or plain threads.

Each is fed URLs with start() and hands results back with finished(), as they
come, so the driver's loop is the same for a laptop crawl and a KubeRay job.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, Union

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

    async def collect(self, batch_wait_s: float = 0.0, batch_min_in_flight: int = 0) -> list[FetchResult]:
        """What is done since the last call; waits for one result if there is none yet and any in flight.

        With batch_wait_s, once a result is there, waits that much longer for
        more, if at least batch_min_in_flight URLs are still in flight (so
        more are about to come).
        """
        if not self._done and self._tasks:
            await self._wake.wait()
        if batch_wait_s and batch_min_in_flight and len(self._tasks) >= batch_min_in_flight:
            await asyncio.sleep(batch_wait_s)
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
        self.marks: dict[str, float] = {}  # moments for crawler.timing (epoch seconds)
        self._created = time.monotonic()
        self._results: "queue.SimpleQueue[FetchResult]" = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crawl-fetch", daemon=True)
        self._thread.start()
        self._fetcher: Optional[StreamingFetcher] = None

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._created
            self.marks["first_request"] = time.time()
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
        self.marks: dict[str, float] = {}
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
    """A Ray actor (async): fetches and parses the URLs it is sent, and answers with what is done."""

    # Each Ray call costs the actor and the driver CPU. An answer that waits 5 ms
    # after its first result, when many URLs are in flight, carries several:
    # measured on the 1,571-page site, 20 ms a request, 64 in flight, it halved
    # the CPU of a crawl for a few percent of wall time. With few in flight (a
    # crawl's first pages, its last) every result goes back at once.
    BATCH_WAIT_S = 0.005
    BATCH_MIN_IN_FLIGHT = 8

    def __init__(self) -> None:
        self._fetcher = StreamingFetcher()
        self._options: Optional[FetchOptions] = None

    async def ready(self) -> bool:
        import aiohttp  # noqa: F401  (imported now rather than on the first request)

        return True

    async def exchange(self, urls: list[str], options: Optional[FetchOptions]) -> list[FetchResult]:
        """Start `urls`; answer with the results done since the last call, waiting for one if need be.

        One call both feeds and collects, so a busy actor costs one Ray call per
        batch of results. options come with the first call only.
        """
        self._options = options or self._options
        if urls:
            self._fetcher.start(urls, self._options)
        return await self._fetcher.collect(self.BATCH_WAIT_S, self.BATCH_MIN_IN_FLIGHT)


class RayExecutor:
    """Ray mode: a pool of long-lived fetcher actors, each fetching many URLs at once in its event loop.

    Each actor has at most one exchange() call outstanding: it carries the new
    URLs for that actor and comes back with the results done meanwhile, so
    results stream back in small batches while the driver keeps the actors fed.
    URLs started while every actor's call is out wait in the driver and go
    with the next call that comes back (within a few milliseconds when the
    actors are busy). The actors are I/O bound: each asks for a fraction of a
    CPU, and SPREAD puts them on different nodes of a cluster. Each actor is a
    new Ray worker process, a second or more before it answers on a busy node:
    meanwhile the driver fetches the first URLs itself, in an event loop of its
    own (the head start; `fetched_in_driver` counts them), so a crawl does not
    wait for Ray's workers to start, and a small one may end before any does.
    From the first actor's answer on, every new URL goes to the actors; the
    others take URLs once they answer. An actor that dies takes its URLs in
    flight with it: they are reported failed and the others carry on. With
    head_start=False every URL waits for an actor.
    """

    # While the driver fetches and no actor has answered yet, how often the driver looks for both.
    HEAD_START_POLL_S = 0.02

    def __init__(self, fetchers: int = 2, address: Optional[str] = None, num_cpus: float = 0.5,
                 head_start: Union[Callable[[], "AsyncExecutor"], bool, None] = None,
                 head_start_urls: int = 16) -> None:
        """head_start makes the driver's own executor for the first URLs, started before an actor answers
        (default: an AsyncExecutor); pass False to send every URL to an actor. The driver fetches at most
        head_start_urls (the crawl's --concurrency): what the first moments need, while the bulk of a
        crawl waits for the actors (fetching and parsing in the driver also slows its own join).

        With the head start, Ray is imported and joined in a thread while the driver already fetches:
        a running Ray (a job's: RAY_ADDRESS is set; or `address`), half a second of a job's driver; or
        a Ray this process starts itself, seconds (_keep_own_ray). A Ray of our own starts at once: it
        takes seconds, and one the crawl turns out not to need costs no wait. A running Ray is joined
        once the crawl goes past its first URLs (a second start(), or URLs beyond the driver's share): a
        crawl of its start URLs alone (one page, --depth 0) is the driver's, and does not pay for
        importing Ray beside it (the import holds the interpreter's lock in bursts: 0.2-0.4 s of a
        one-page job's crawl).
        """
        self._created = time.monotonic()
        self.startup_s: Optional[float] = None  # from here to the first request
        self.marks: dict[str, float] = {}  # moments for crawler.timing (epoch seconds)
        self._ray = None
        self._started_ray = False
        self._workers_path: Optional[str] = None
        self._actors: list = []
        self._in_flight: list[set[str]] = []  # per actor: sent to it, not yet back
        self._calls: dict = {}  # ObjectRef of an exchange() call -> actor index
        self._starting: dict = {}  # ready() calls of the actors that have not answered yet -> actor index
        self._usable: set[int] = set()  # answered ready()
        self._waiting: list[str] = []  # started, not yet sent: every usable actor had a call out
        self._options: Optional[FetchOptions] = None
        self._options_sent: set[int] = set()
        self._lost: set[int] = set()
        self._make_driver = AsyncExecutor if head_start is None or head_start is True else head_start
        self._driver = None  # the head start's executor, made on first use
        self._driver_pending = 0  # URLs the driver fetches that have not come back
        self.fetched_in_driver = 0
        self._head_start_urls = head_start_urls
        self._joined = threading.Event()  # Ray joined and the actors asked to start
        self._join_error: Optional[BaseException] = None
        self._joining: Optional[threading.Thread] = None  # the head start's join, begun by start()
        self._join_begun = False
        self._own_ray = not (address or os.environ.get("RAY_ADDRESS"))  # no Ray to join: one of our own
        self._stop = threading.Event()  # close() was called: the Ray of our own goes once it is up
        if self._make_driver:
            self._joining = threading.Thread(target=self._keep_own_ray if self._own_ray else self._join_beside,
                                             args=(fetchers, address, num_cpus), name="crawl-ray-join", daemon=True)
            if self._own_ray:
                self._begin_join()
            return
        self._join(fetchers, address, num_cpus)  # no head start: every URL waits for an actor
        while not self._usable:  # the first actor to answer is enough to begin
            if not self._starting:
                raise RuntimeError(_ALL_LOST)
            first, _ = self._ray.wait(list(self._starting), num_returns=1)
            self._answered(first[0])

    def _join(self, fetchers: int, address: Optional[str], num_cpus: float) -> None:
        import ray  # only Ray mode needs Ray installed

        self.marks["ray_imported"] = time.time()
        if not ray.is_initialized():
            self._workers_path = _join_or_start(ray, address)
            self._started_ray = True
        self.marks["ray_connected"] = time.time()
        actor = ray.remote(FetcherActor).options(num_cpus=num_cpus, scheduling_strategy="SPREAD")
        self._actors = [actor.remote() for _ in range(fetchers)]
        self._in_flight = [set() for _ in self._actors]
        self._starting = {a.ready.remote(): i for i, a in enumerate(self._actors)}
        self._ray = ray
        self._joined.set()

    def _begin_join(self) -> None:
        self._join_begun = True
        self.marks["ray_join"] = time.time()
        _keep_sigterm_exiting()  # ray.init sets this only when called from the main thread
        self._joining.start()

    def _join_beside(self, fetchers: int, address: Optional[str], num_cpus: float) -> None:
        try:
            self._join(fetchers, address, num_cpus)
        except BaseException as exc:  # noqa: BLE001 - handed to the crawl's thread, raised there
            self._join_error = exc
            self._joined.set()

    def _keep_own_ray(self, fetchers: int, address: Optional[str], num_cpus: float) -> None:
        """Start a Ray of this process's own, keep it while the crawl runs, and stop it after close().

        All in this one thread: on Linux, Ray's processes die with the thread that started them
        (PR_SET_PDEATHSIG), so this thread stays until the crawl is over. A crawl that ends before its
        Ray is up (a small site, fetched by the driver alone) does not wait for it: this thread stops
        that Ray once it is up, and a process that exits sooner takes it along (Ray's processes share
        their starter's fate: the kernel's parent-death signal here, Ray's reaper or a job object
        elsewhere).
        """
        self._join_beside(fetchers, address, num_cpus)
        if self._ray is None or not self._started_ray:  # the start failed (raised in the crawl), or Ray was already up
            return
        self._stop.wait()
        self._shut_down()

    def _shut_down(self) -> None:
        """Shut down the Ray this process called ray.init on, and remove its workers' path folder."""
        self._ray.shutdown()
        if self._workers_path:
            shutil.rmtree(self._workers_path, ignore_errors=True)

    def start(self, urls: Sequence[str], options: FetchOptions) -> None:
        first = self.startup_s is None
        if first:
            self.startup_s = time.monotonic() - self._created
            self.marks["first_request"] = time.time()
        self._options = options
        ready = self._ready()
        if self._make_driver and (not ready or (not self._usable and self._starting)):
            # Ray not joined yet, or no actor has answered: the driver fetches the first of these
            mine = list(urls)[:max(0, self._head_start_urls - self.fetched_in_driver)]
            if mine:
                if self._driver is None:
                    self._driver = self._make_driver()
                self._driver.start(mine, options)
                self._driver_pending += len(mine)
                self.fetched_in_driver += len(mine)
            urls = list(urls)[len(mine):]
        if self._joining is not None and not self._join_begun and (urls or not first):
            self._begin_join()  # the crawl goes past its first URLs: Ray's fetchers will be wanted
        self._waiting += urls
        if ready:
            self._send()

    def finished(self, timeout: Optional[float]) -> list[FetchResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._ready():  # Ray is being joined: only the driver's own fetches come back
                if not self._driver_pending and not self._join_begun:
                    return []  # nothing out: the driver has it all back, and no URL waits for Ray
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                look = self.HEAD_START_POLL_S if left is None else min(left, self.HEAD_START_POLL_S)
                done = self._from_driver(look) if self._driver_pending else []
                if not self._driver_pending:
                    self._joined.wait(look)
                if done or (deadline is not None and time.monotonic() >= deadline):
                    return done
                continue
            done = self._from_driver(0)
            self._send(collect=True)
            refs = [*self._calls, *self._starting]
            if not refs:
                if done or not self._driver_pending:
                    return done
                return self._from_driver(timeout if deadline is None else max(0.0, deadline - time.monotonic()))
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._driver_pending:  # the driver's fetches come back on their own: look at both often
                left = self.HEAD_START_POLL_S if left is None else min(left, self.HEAD_START_POLL_S)
            ready, rest = self._ray.wait(refs, num_returns=1, timeout=left)
            if rest and ready:
                more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                if ref in self._starting:  # an actor answering ready(): it takes URLs from now on
                    self._answered(ref)
                else:
                    done += self._results_of(ref, self._calls.pop(ref))
            self._send()
            done += self._from_driver(0)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if done or (not ready and (out_of_time or not self._driver_pending)):  # results, or the timeout passed
                return done

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        if self._join_begun and not self._joined.is_set():
            if self._own_ray:  # still starting: _keep_own_ray stops it once it is up
                self._stop.set()
                return
            self._joining.join(timeout=60)  # a join under way ends in a second or so: then its actors go
        if self._ray is None:
            return
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started_ray and self._own_ray and self._join_begun:  # stopped by the thread that started it
            self._stop.set()
            self._joining.join(timeout=60)
        elif self._started_ray:
            self._shut_down()

    def _send(self, collect: bool = False) -> None:
        """Hand the waiting URLs to the actors that have no call out, the least loaded first;
        with collect, also call every such actor that still has URLs in flight."""
        out = set(self._calls.values())
        free = [i for i in sorted(self._usable) if i not in out and i not in self._lost]
        if not free:
            if len(self._lost) == len(self._actors):
                raise RuntimeError(_ALL_LOST)
            return
        shares: dict[int, list[str]] = {i: [] for i in free}
        for url in self._waiting:
            index = min(free, key=lambda i: len(self._in_flight[i]) + len(shares[i]))
            shares[index].append(url)
        self._waiting = []
        for index, share in shares.items():
            if share or (collect and self._in_flight[index]):
                self._in_flight[index].update(share)
                options = None if index in self._options_sent else self._options
                self._options_sent.add(index)
                self._calls[self._actors[index].exchange.remote(share, options)] = index

    def _answered(self, ref) -> None:
        index = self._starting.pop(ref)
        try:
            self._ray.get(ref)
            self._usable.add(index)
            self.marks.setdefault("fetchers_ready", time.time())
        except self._ray.exceptions.RayError:  # it died starting: the others carry the crawl
            self._lost.add(index)
            if not self._starting and not self._usable:
                raise RuntimeError(_ALL_LOST)

    def _ready(self) -> bool:
        """Whether Ray is joined (raising what stopped the join)."""
        if not self._joined.is_set():
            return False
        if self._join_error is not None:
            error, self._join_error = self._join_error, None
            raise error
        return self._ray is not None

    def _from_driver(self, timeout: Optional[float]) -> list[FetchResult]:
        """What the driver's own fetches (the head start) have brought back."""
        if not self._driver_pending:
            return []
        done = self._driver.finished(timeout)
        self._driver_pending -= len(done)
        return done

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


_ALL_LOST = "every Ray fetcher actor has died; see the Ray logs (ray logs cluster) for why"


def _keep_sigterm_exiting() -> None:
    """What ray.init does in the main thread only: SIGTERM (`ray job stop`) exits the driver. A join in
    another thread (the head start) leaves it here, and Ray's warning that it did not is dropped."""
    import logging
    import signal
    import sys

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in record.getMessage())


def _join_or_start(ray, address: Optional[str]) -> Optional[str]:
    """Join a Ray (a job's: RAY_ADDRESS is set; or the one at `address`), or start one for this process with
    only what a crawl uses; then returns a folder to remove once that Ray is shut down."""
    # Ray 2.52 warns on every ray.init about a future change to GPU environment variables: nothing a
    # crawl uses, and a line in every crawl's output (and job log).
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=_workers_runtime_env(), logging_level="WARNING")
        return None
    # A Ray of our own: its workers are our descendants and inherit our environment, so PYTHONPATH hands
    # them this very package, with no runtime environment to pack, upload and unpack for each worker
    # (seconds, measured). No dashboard either. The path holds this package alone (a link to it), so
    # nothing else beside it shadows a module Ray's own processes import.
    folder = tempfile.mkdtemp(prefix="kindlab-crawler-")
    package = os.path.dirname(os.path.abspath(__file__))
    try:
        os.symlink(package, os.path.join(folder, os.path.basename(package)), target_is_directory=True)
        path = folder
    except OSError:  # no symbolic links here (Windows without the privilege): the package's parent
        path = os.path.dirname(package)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([path, before] if before else [path])
    try:
        ray.init(include_dashboard=False, logging_level="WARNING")
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    _stop_autoscaler_monitor(ray)
    return folder


def _stop_autoscaler_monitor(ray) -> None:
    """Stop the autoscaler monitor of the one-node Ray this process started: a crawl never scales it.

    ray.init has no option to leave it out. Left running, it costs CPU while the fetchers start, and
    ray.shutdown() stops it last of all, after the GCS: its SIGTERM handler then reports to the GCS
    that is gone, and shutdown waits out its one-second grace before killing it (measured, Ray 2.52:
    1.0 s of a 1.2 s shutdown). Ray keeps its processes on a private object; where that changes, the
    monitor simply stays.
    """
    node = getattr(getattr(ray, "_private", None) and ray._private.worker, "_global_node", None)
    kill = getattr(node, "kill_monitor", None)
    if kill is not None:
        try:
            kill(check_alive=False)
        except Exception:  # noqa: BLE001 - a monitor that will not stop costs a second, not the crawl
            pass


def _workers_runtime_env() -> Optional[dict]:
    """What the workers of a Ray this driver joins need to import this package.

    A Ray job already has it (its working_dir, or kindlab's Ray image, see
    crawler.jobs); a driver joining any other Ray sends the package along.
    """
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # set by Ray for a job's driver
        return None
    package_dir = os.path.dirname(os.path.abspath(__file__))
    return {"py_modules": [package_dir], "excludes": ["__pycache__", "*.pyc"]}
