"""Where fetch_batch runs: threads in this process, or Ray tasks on a cluster.

Both hand back concurrent.futures.Future objects, so the driver's loop is the
same for a laptop crawl and a KubeRay job.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Sequence

from .fetch import FetchOptions, FetchResult, fetch_batch

BatchFetcher = Callable[[Sequence[str], FetchOptions, int], "list[FetchResult]"]


class ThreadExecutor:
    """Local mode: one thread a request, no Ray."""

    batch_size = 1  # a thread fetches one URL at a time; batching would only add latency

    def __init__(self, concurrency: int, fetch: BatchFetcher = fetch_batch) -> None:
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawl")
        self._fetch = fetch

    def submit(self, urls: Sequence[str], options: FetchOptions, threads: int) -> Future:
        return self._pool.submit(self._fetch, list(urls), options, threads)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray mode: each batch of URLs is one Ray task, fetched there by a thread per URL.

    The tasks are I/O bound, so each asks for a fraction of a CPU: a two-CPU
    laptop then runs several at once, and a cluster spreads them over its workers.
    A task lost with its worker is run once more (max_retries=1), the one case in
    which its URLs are requested again.
    """

    def __init__(
        self,
        batch_size: int = 16,
        num_cpus: float = 0.25,
        address: Optional[str] = None,
        fetch: BatchFetcher = fetch_batch,
    ) -> None:
        import ray  # only Ray mode needs Ray installed

        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            # In a Ray job RAY_ADDRESS is set and this joins the cluster;
            # elsewhere it starts a local Ray for this process.
            ray.init(address=address, runtime_env=_workers_runtime_env(), logging_level="WARNING")
            self._started_ray = True
        self.batch_size = batch_size
        self._remote = ray.remote(fetch).options(num_cpus=num_cpus, max_retries=1)

    def submit(self, urls: Sequence[str], options: FetchOptions, threads: int) -> Future:
        return self._remote.remote(list(urls), options, threads).future()

    def close(self) -> None:
        if self._started_ray:
            self._ray.shutdown()


def _workers_runtime_env() -> Optional[dict]:
    """What Ray workers need to import this package.

    A Ray job already ships it in its working_dir (see crawler.jobs); a driver
    started any other way sends the package along itself.
    """
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # set by Ray for a job's driver
        return None
    package_dir = os.path.dirname(os.path.abspath(__file__))
    return {"py_modules": [package_dir], "excludes": ["__pycache__", "*.pyc"]}
