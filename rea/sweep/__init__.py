"""Prompt sweeps: which prompts make a rare completion least rare, and by how much.

``run_sweep`` (:mod:`rea.sweep.driver`, also ``rea sweep`` on the command line) estimates a tail probability with its
interval for every cell of a grid prompts × observables × thresholds × seeds, on a pool of Ray workers, and ranks
the prompts. :mod:`rea.sweep.grid` (prompts, cells, jobs, keys), :mod:`rea.sweep.methods` (the profile's budget;
the estimation methods ``"tps"`` and ``"direct"``), :mod:`rea.sweep.worker` (one worker: a loaded model, one job
at a time), :mod:`rea.sweep.pool` (Ray: connect, place workers, replace dead ones), :mod:`rea.sweep.summary`
(files, the ranked summary).
"""

from rea.sweep.driver import run_sweep
from rea.sweep.grid import Cell, Job, make_jobs, read_prompts
from rea.sweep.methods import METHODS, budget
from rea.sweep.summary import COLUMNS, format_summary, summarize
from rea.sweep.worker import Worker, run_job

__all__ = ["run_sweep", "read_prompts", "Cell", "Job", "make_jobs", "METHODS", "budget", "COLUMNS", "format_summary",
           "summarize", "Worker", "run_job"]
