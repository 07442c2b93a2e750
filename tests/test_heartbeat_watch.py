"""The daemon's heartbeat file: touched on a thread of its own while a job runs long (a
job retrying through an outage), withheld once a job has run longer than any job can
(hung), so the health check fails only then."""

from __future__ import annotations

import threading
import time

from apscheduler.triggers.date import DateTrigger

from bot.daemon.service import JobSpec, Schedule, add_heartbeat, make_scheduler
from bot.daemon.watch import HUNG_JOB_SECONDS, JobWatch


def test_the_watch_names_a_job_only_once_it_has_run_too_long():
    now = [100.0]
    watch = JobWatch(clock=lambda: now[0])
    assert watch.hung() is None
    with watch.running("open"):
        now[0] += HUNG_JOB_SECONDS - 1
        assert watch.hung() is None
        now[0] += 2
        assert watch.hung() == ("open", HUNG_JOB_SECONDS + 1)
        with watch.running("poll"):  # a job run from inside another
            assert watch.hung() is None
        assert watch.hung()[0] == "open"
    assert watch.hung() is None


def _run_with_a_long_job(tmp_path, watch: JobWatch, job_seconds: float) -> list[float]:
    """A scheduler whose one job blocks its worker for `job_seconds`, with a heartbeat
    every 0.1 s; the heartbeat file's modification times seen meanwhile."""
    path = tmp_path / "heartbeat"
    release = threading.Event()

    def long_job() -> bool:
        with watch.running("open"):
            release.wait(job_seconds)
        return True

    schedule = Schedule([JobSpec("open", DateTrigger(), long_job)])
    add_heartbeat(schedule, path, watch, every=0.1)
    scheduler = make_scheduler(schedule)
    scheduler.start()
    seen = []
    try:
        deadline = time.monotonic() + job_seconds * 0.8
        while time.monotonic() < deadline:
            seen.append(path.stat().st_mtime_ns)
            time.sleep(0.1)
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    return seen


def test_the_heartbeat_goes_on_while_a_job_runs_long(tmp_path):
    """Before: touched by the jobs' one worker, it stood still for as long as the job ran
    (a decision retrying through an Alpaca outage: minutes), and the container was
    reported unhealthy."""
    seen = _run_with_a_long_job(tmp_path, JobWatch(), 2.0)
    assert len(set(seen)) >= 5  # touched again and again during the job


def test_the_heartbeat_stops_while_a_job_is_hung(tmp_path):
    seen = _run_with_a_long_job(tmp_path, JobWatch(limit=0.3), 2.0)
    later = seen[len(seen) // 2 :]  # well after the job passed the limit
    assert len(set(later)) == 1  # no longer touched


def test_a_stopping_daemon_removes_only_its_own_heartbeat(tmp_path):
    """Two daemons may share a heartbeat path (two configs in one clone, or the one that
    took the lock over): the one stopping removed the other's heartbeat, and `bot health`
    called a running daemon stopped until its next beat."""
    from bot.daemon.service import remove_heartbeat, touch_heartbeat

    path = tmp_path / "heartbeat"
    touch_heartbeat(path)
    remove_heartbeat(path)
    assert not path.exists()  # ours: gone
    touch_heartbeat(path)
    path.write_text("999999999\n")  # another daemon beat since
    remove_heartbeat(path)
    assert path.exists()
    remove_heartbeat(tmp_path / "never-written")  # nothing to remove: no error
