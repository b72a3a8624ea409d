"""The sweep on Ray: connect, place one worker per GPU (or per ``cpus_per_worker`` cores), hand out jobs.

* :func:`connect` -- ``ray.init``: a local Ray with ``num_cpus`` cores by default, the cluster at ``address`` (or
  ``$RAY_ADDRESS``) when given; a Ray the caller already started is used as it is.
* :func:`plan_workers` -- how many workers, and what each asks Ray for: one GPU each where the cluster has GPUs
  (and ``device`` is not ``"cpu"``), else ``cpus_per_worker`` cores each (its torch threads).
* :func:`run_jobs` -- a pool of :class:`rea.sweep.worker.Worker` actors, each keeping its model loaded across the
  jobs it serves. A free worker takes the next job. A worker process that dies (killed, out of memory, a crash in
  native code) is replaced; its job goes back to the front of the queue and runs again on the new worker, up to
  ``max_attempts`` times in all -- TPS resumes there from its last checkpoint -- after which its cells are reported
  as failed with the one-line cause. Failures inside a job never reach the pool (:func:`rea.sweep.worker.run_job`).
"""

from __future__ import annotations

import logging
import os
from collections import deque

from rea.sweep.worker import Worker, error_rows, one_line


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure Ray is running; True if this call started it (then the caller shuts it down).

    ``address`` (else ``$RAY_ADDRESS``) joins that cluster (``"auto"``: the one on this machine); without one a local
    Ray starts with ``num_cpus`` cores (default: all). The dashboard is off and Ray's own log lines stay quiet (in a
    notebook, importing Ray would log to stderr that ``ipywidgets`` is missing).
    """
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
    return True


def plan_workers(device: str, workers: int | None, cpus_per_worker: int) -> tuple[int, dict, int | None]:
    """``(n_workers, ray options of one worker, torch threads of one worker or None)`` for the running Ray.

    GPUs in the cluster and ``device`` not ``"cpu"``: one worker per GPU, each asking for one. Otherwise one worker
    per ``cpus_per_worker`` cores (at least one), each pinned to that many threads. ``workers`` overrides the count.
    ``device="cuda"`` on a cluster without GPUs is a one-line ValueError.
    """
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if device.startswith("cuda") and not gpus:
        raise ValueError(f"device: {device!r} asked for, but the Ray cluster has no GPU; use 'auto' or 'cpu'")
    if gpus and device != "cpu":
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}, None
    n = max(1, int(resources.get("CPU", 1)) // cpus_per_worker)
    return workers or n, {"num_cpus": cpus_per_worker}, cpus_per_worker


def _dead(err) -> bool:
    from ray.exceptions import RayActorError, WorkerCrashedError

    return isinstance(err, (RayActorError, WorkerCrashedError))


def run_jobs(jobs, job_args: tuple, on_done, *, model: str, device: str, n_workers: int, options: dict,
             threads: int | None, max_attempts: int = 2) -> None:
    """Run ``jobs`` on a pool of at most ``n_workers`` actors; ``on_done(job, result)`` gets each job's result
    (``{"rows", "provenance"}`` of :func:`rea.sweep.worker.run_job`) as it finishes, in the calling process.

    ``job_args`` = ``(method, side, root)`` of :meth:`Worker.run`. Workers start when there is work for them and
    are killed at the end (also on an interrupt). See the module docstring for what happens when one dies.
    """
    import ray

    remote = ray.remote(Worker).options(max_restarts=0, **options)
    queue, inflight, idle, alive = deque((job, 1) for job in jobs), {}, [], 0
    try:
        while queue or inflight:
            while queue and (idle or alive < n_workers):
                if not idle:
                    idle.append(remote.remote(model, device, threads))
                    alive += 1
                job, attempt = queue.popleft()
                actor = idle.pop()
                inflight[actor.run.remote(job, *job_args)] = (actor, job, attempt)
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, job, attempt = inflight.pop(ref)
            try:
                result = ray.get(ref)
                idle.append(actor)
            except Exception as err:  # noqa: BLE001 - Ray's errors: a dead worker, or a job that could not run
                if not _dead(err):
                    idle.append(actor)
                    result = {"rows": error_rows(job, one_line(err)), "provenance": None}
                else:
                    ray.kill(actor)
                    alive -= 1
                    if attempt < max_attempts:
                        queue.appendleft((job, attempt + 1))
                        continue
                    why = f"the worker process died on each of {attempt} attempts ({one_line(err, 200)})"
                    result = {"rows": error_rows(job, why), "provenance": None}
            on_done(job, result)
    finally:
        for actor in idle + [a for a, _, _ in inflight.values()]:
            ray.kill(actor)
