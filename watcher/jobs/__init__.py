"""Job types: built-ins, the ``watcher.jobs`` entry-point group, ``module:attr``."""

from __future__ import annotations

from watcher.config import JobConfig
from watcher.jobs.base import ArgumentError, Job, MissingArgument
from watcher.system.plugins import PluginError, resolve

BUILTIN_JOBS = {
    "dbcheck": "watcher.jobs.dbcheck:JOB",
    "backup": "watcher.jobs.backup:JOB",
    "restore": "watcher.jobs.restore:JOB",
    "archive": "watcher.jobs.archive:JOB",
    "command": "watcher.jobs.command:JOB",
}


def job_type(name: str) -> Job:
    """The job implementation for a type name; raises ``PluginError``."""
    job = resolve("watcher.jobs", name, BUILTIN_JOBS)
    if not hasattr(job, "run") or not hasattr(job, "check_args"):
        raise PluginError(f"job type {name!r} has no run() and check_args()")
    return job  # type: ignore[no-any-return]  # reason: plugin objects are untyped


def check_job(config: JobConfig) -> list[str]:
    """Problems with a configured job. Arguments a trigger may still supply are not required
    unless the job is scheduled (``at``), when the config alone must be complete."""
    try:
        job = job_type(config.type)
    except PluginError as exc:
        return [f"type: {exc}"]
    try:
        job.check_args(config.args)
    except MissingArgument as exc:
        if config.at is not None:
            return [f"{exc} (a scheduled job must be complete in the config)"]
    except ArgumentError as exc:
        return [str(exc)]
    return []
