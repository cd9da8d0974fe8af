"""Jobs: work larger than one request, run in the background through the same runtime.

* :mod:`service.jobs.store`: the :class:`~service.jobs.store.JobStore` interface (what a job
  store must do, whatever keeps the state) and its SQLite implementation;
* :mod:`service.jobs.inputs`: the spooled input read back in groups of records;
* :mod:`service.jobs.kinds`: what each kind of job does (predict, scan, variants, explain),
  chunk by chunk, writing exactly what the synchronous endpoint answers;
* :mod:`service.jobs.finetune`: the fine-tuning kind (a worker process trains, exports and the
  new version is loaded), registered here with the others;
* :mod:`service.jobs.runner`: the worker that claims jobs, runs their chunks at background
  priority, commits each chunk's output with its progress, resumes after a crash, and puts the
  finished result in place atomically.

The HTTP routes are in :mod:`service.api.jobs`; the design is described in ``docs/jobs.md``.
"""

from service.jobs.finetune import FinetuneWork
from service.jobs.kinds import KINDS

KINDS["finetune"] = FinetuneWork
