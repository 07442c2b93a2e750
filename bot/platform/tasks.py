"""The platform's Celery app and tasks (RabbitMQ carries them; the scheduler publishes,
`bot worker` runs them).

Delivery rules that make each account's effects happen once:
- acks late: a message is acknowledged only after its task returned, so a worker that
  dies mid-task (SIGKILL, a lost machine) leaves it to RabbitMQ, which delivers it again
  (reject_on_worker_lost does the same for a pool process that dies); prefetch 1, so a
  dead worker strands at most one waiting task per thread;
- every task is idempotent, keyed by (account, batch) in `platform_tasks`: a finished
  one does nothing when delivered again (bot.platform.store.claim) and a stopped one
  resumes from its recorded plan (bot.platform.account_jobs);
- a broker 429/5xx, timeout or lost connection is retried with exponential backoff and
  jitter (bot.net.RetryPolicy's delays) up to BOT_PLATFORM_RETRIES times; then, or at
  once for an error a retry cannot fix, the account is dead-lettered: its task row is
  `dead` and an `incidents` row of kind `dead_letter` says why; the batch goes on;
- one account's tasks never run at once (a Redis lock per account, held by each
  execution under its own token and renewed with its claim while it makes requests:
  bot.platform.lease), and every broker request of every worker draws on one
  token bucket in Redis (bot.platform.throttle);
- a message whose connection dropped is delivered again while its first execution may
  go on (Celery does not stop a thread): the redelivery takes the account's lock and the
  task row over, and every later write of the first execution (its plan, its done, its
  retry or dead-letter) is fenced off by the row's attempt count (store.fence), so it
  stops without a trace; the orders it may have sent carry the same client_order_ids,
  which the redelivery finds at the broker and adopts.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from typing import Any

import redis
import requests
import sqlalchemy as sa
import structlog
from celery import Celery, Task
from kombu import Queue
from kombu.exceptions import OperationalError as QueueUnavailable

from bot.broker.base import BrokerError
from bot.errors import BotError, DatabaseUnreachable
from bot.logs import mask_text
from bot.net import RetryPolicy
from bot.platform import account_jobs, store
from bot.platform.context import WorkerContext
from bot.platform.lease import Lease, LockLost, held
from bot.platform.settings import PlatformSettings
from bot.store.tradelog import ClaimTaken

log = structlog.get_logger(__name__)

app = Celery("leverbot", set_as_current=False)

#: deliveries of one task that may start work beyond its retries (worker deaths)
REDELIVERIES = 3
#: how long a task waits before trying again when another task holds its account
BUSY_DELAY = 2.0
#: how long a batch's counters stay in Redis (a batch ends within days; keys never pile up)
COUNTER_TTL = 14 * 24 * 3600
_TRANSIENT = re.compile(
    r"HTTP (429|5\d\d)\b|timed out|connection failed|could not reach|no answer from"
)

_settings: PlatformSettings | None = None
_database_url: str | None = None
_live = False
_context: WorkerContext | None = None
_context_lock = threading.Lock()


def configure(settings: PlatformSettings, database_url: str | None = None, *, live: bool = False
              ) -> Celery:
    """Point the app at the platform's queue (the scheduler and the workers); a worker
    also names its trade log and mode."""
    global _settings, _database_url, _live, _context
    _settings, _database_url, _live, _context = settings, database_url, live, None
    _forget_connections()
    app.conf.update(
        broker_url=settings.queue_url,
        broker_connection_retry_on_startup=True,
        # A worker whose machine vanished without closing its connection is noticed
        # within ~2 heartbeats and its tasks delivered again (and a stopping worker is not
        # held up waiting for the next check of a long heartbeat).
        broker_heartbeat=10,
        broker_transport_options={"confirm_publish": True},  # a published task is stored
        task_default_queue=settings.queue_name,
        task_queues=[Queue(settings.queue_name, routing_key=settings.queue_name, durable=True)],
        task_default_delivery_mode="persistent",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        timezone="UTC",
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def _forget_connections() -> None:
    """Forget the app's connection and producer pools, so a new broker URL is used (a
    process that configures the app twice: tests, a command after another). kombu
    keeps its pools per URL and hands the same one back for the same URL."""
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


def context() -> WorkerContext:
    """This process's worker context, made at its first task."""
    global _context
    with _context_lock:
        if _context is None:
            if _settings is None or _database_url is None:
                raise BotError("the platform worker is not configured (start it with `bot worker`)")
            _context = WorkerContext(_settings, _database_url, live=_live)
        return _context


def _context_for(task: Task, *, retried: bool = True) -> WorkerContext:
    """This process's worker context for `task`. A context that cannot be made (the trade
    log unreachable at the process's first task: a database failing over, a new pool
    process) retries the task with backoff, up to BOT_PLATFORM_RETRIES times: raised
    at once, it was acknowledged and dropped, a week's decision or a close lost without
    a trace. A task the timetable publishes again anyway (`retried=False`: polls) is not
    retried: its retries would pile up and fire together. Given up, it ends on an error
    no autoretry rule takes (DatabaseUnreachable)."""
    try:
        return context()
    except (DatabaseUnreachable, sa.exc.OperationalError) as exc:
        assert _settings is not None  # context() refuses an unconfigured worker first
        error = mask_text(str(exc))
        failures = _context_failures(task, _settings) if retried else 0
        if not retried or failures > _settings.max_retries:
            log.error("worker context unavailable; task given up", task=task.name, error=error,
                      failures=failures)
            raise DatabaseUnreachable(f"{task.name}: the trade log could not be reached "
                                      f"({failures} times): {error}") from None
        countdown = backoff(_settings).delay(failures - 1)
        log.warning("worker context unavailable; task retried", task=task.name, error=error,
                    countdown=round(countdown, 2))
        raise task.retry(countdown=countdown) from None


def _context_failures(task: Task, settings: PlatformSettings) -> int:
    """How many times this task (its id is kept across retries) could not make a worker
    context, counted in Redis: its retry count also holds its waits for a busy account
    (every 2 s), which ended a close after one failure. Redis down: the retry count."""
    key = f"{settings.queue_name}:context-failures:{task.request.id}"
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        failures = int(client.incr(key))
        client.expire(key, COUNTER_TTL)
        return failures
    except redis.RedisError:
        return task.request.retries + 1


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: the broker's 429/5xx, a timeout or lost connection (broker,
    database, Redis). BrokerError carries the status in its message (bot.broker)."""
    if isinstance(exc, BrokerError):
        return bool(_TRANSIENT.search(str(exc)))
    if isinstance(exc, (LockLost, DatabaseUnreachable)):  # LockLost: retried once the lock is
        return True  # free; it resumes from its plan
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError)
    # kombu's OperationalError: RabbitMQ refused or lost a publish (a batch's tasks)
    return isinstance(exc, (requests.RequestException, redis.ConnectionError, redis.TimeoutError,
                            QueueUnavailable))


def backoff(settings: PlatformSettings) -> RetryPolicy:
    return RetryPolicy(base_delay=settings.retry_delay, max_delay=settings.retry_max_delay)


# -- the weekly decision ------------------------------------------------------------------


@app.task(bind=True, name="leverbot.platform.decide", max_retries=None)
def decide(self: Task, day: str, mode: str) -> dict[str, Any]:
    """Decide each profile's targets for `day` (once) and publish one rebalance task per
    account whose task is not final (all of them for a new batch)."""
    from bot.platform.decision import decide_batch

    ctx = _context_for(self)
    try:
        if mode != ctx.mode:
            raise BotError(f"a {mode} decision reached a {ctx.mode} worker; start workers with "
                           f"{'--live' if mode == 'live' else 'no --live'} for it")
        newest = store.newest_decision_day(ctx.engine, mode)
        if newest is not None and newest > dt.date.fromisoformat(day):
            return _superseded_decision(ctx, day, mode, newest)
        batch = decide_batch(ctx, dt.date.fromisoformat(day))
        # Inside the retry: a batch committed whose tasks were not published (Redis or
        # RabbitMQ failing here) is found again by the retry, which publishes them.
        published = _publish_batch(ctx, batch)
    except Exception as exc:  # noqa: BLE001 - retried, or recorded: never lost silently
        error = mask_text(f"{type(exc).__name__}: {exc}")
        if is_transient(exc) and self.request.retries < ctx.settings.max_retries:
            countdown = backoff(ctx.settings).delay(self.request.retries)
            log.warning("weekly decision retried", day=day, error=error, countdown=round(countdown, 2))
            raise self.retry(countdown=countdown) from None
        log.error("weekly decision failed", day=day, error=error)
        ctx.tradelog(None).incident(ctx.clock.now(), "job:decide", error, {"day": day, "mode": mode})
        _no_longer_waiting(ctx, day, mode)
        return {"error": error}
    log.info("batch published", run=batch.run_id, day=day, tasks=published, created=batch.created)
    if batch.failed:
        log.error("batch without some profiles: their accounts are dead-lettered",
                  run=batch.run_id, accounts=batch.dead, failed_profiles=batch.failed)
        return {"run": batch.run_id, "published": published, "failed_profiles": batch.failed}
    return {"run": batch.run_id, "published": published}


def _publish_batch(ctx: WorkerContext, batch: Any) -> int:
    """Publish a rebalance task for each of the batch's accounts whose task is not final;
    returns how many."""
    rows = store.tasks_of(ctx.engine, batch.run_id, "rebalance", ("pending", "retrying", "running"))
    # The tasks that count themselves final: not those dead from the start with their profile.
    ctx.redis.set(_total_key(ctx, batch.run_id), batch.accounts - batch.dead, ex=COUNTER_TTL)
    publish_each(rebalance, [(r.id, r.account_id) for r in rows],
                 lambda r: f"rebalance-{batch.run_id}-{r[0]}")
    return len(rows)


def _superseded_decision(ctx: WorkerContext, day: str, mode: str, newest: dt.date) -> dict[str, Any]:
    """A decision taken after a newer one was published (workers down past the next
    week's): trading its targets would undo the newer ones. Recorded, not decided."""
    message = (f"the decision on the close of {day} was not made: one on the close of "
               f"{newest} was published since, and its targets are the ones to trade")
    log.error("weekly decision superseded before it ran", day=day, newest=str(newest))
    ctx.tradelog(None).incident(ctx.clock.now(), "decision_superseded", message,
                                {"day": day, "mode": mode, "newest": newest.isoformat()})
    _no_longer_waiting(ctx, day, mode)
    return {"skipped": message}


def _no_longer_waiting(ctx: WorkerContext, day: str, mode: str) -> None:
    """A decision a worker took and gave up on waits no more (`bot platform status` would
    show it waiting for ever): its error is the incident just recorded."""
    try:
        store.drop_waiting(ctx.engine, dt.date.fromisoformat(day), mode)
    except (ValueError, sa.exc.SQLAlchemyError) as exc:  # a malformed day; the database
        log.warning("waiting decision not cleared", day=day, mode=mode, error=str(exc))


def publish_each(task: Task, args: list[tuple[Any, ...]], task_id: Callable[[tuple[Any, ...]], str]
                 ) -> None:
    """Publish many tasks over one connection, each with its deterministic id."""
    with app.producer_or_acquire() as producer:
        for item in args:
            task.apply_async(args=item, task_id=task_id(item), producer=producer)


# -- per account --------------------------------------------------------------------------


#: infrastructure failures outside an account's job (the trade log or Redis unreachable
#: while claiming): Celery retries the task with exponential backoff and jitter
_INFRASTRUCTURE = dict(autoretry_for=(sa.exc.OperationalError, redis.ConnectionError,
                                      redis.TimeoutError),
                       retry_backoff=1, retry_backoff_max=60, retry_jitter=True)


@app.task(bind=True, name="leverbot.platform.rebalance", max_retries=None, **_INFRASTRUCTURE)
def rebalance(self: Task, task_id: int, account_id: int) -> str:
    """One account's orders for its profile's decision of the batch."""
    return _account_task(self, task_id, account_id, account_jobs.rebalance)


@app.task(bind=True, name="leverbot.platform.close", max_retries=None, **_INFRASTRUCTURE)
def close(self: Task, task_id: int, account_id: int) -> str:
    """One account's equity and positions at the close."""
    return _account_task(self, task_id, account_id, account_jobs.close)


def _account_task(task: Task, task_id: int, account_id: int,
                  job: Callable[..., dict[str, Any]]) -> str:
    ctx = _context_for(task)
    settings = ctx.settings
    delivery = task.request.id
    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    token = ctx.locks.acquire(account_id, delivery, redelivered=redelivered)
    if token is None:
        raise task.retry(countdown=BUSY_DELAY)
    try:
        now = ctx.clock.now()
        claim = store.claim(ctx.engine, task_id, delivery, redelivered, now,
                            dt.timedelta(seconds=settings.lease_seconds),
                            max_attempts=settings.max_retries + 1 + REDELIVERIES,
                            worker=task.request.hostname)
        if claim.row.account_id != account_id:
            raise BotError(f"platform task {task_id} is account {claim.row.account_id}'s, "
                           f"not {account_id}'s")
        if claim.verdict == "done":
            return claim.row.status
        if claim.verdict == "busy":
            raise task.retry(countdown=BUSY_DELAY)
        row = claim.row
        if claim.verdict == "exhausted":
            _dead_letter(ctx, row, f"started {row.attempts} times without finishing "
                         "(its worker kept dying)")
            return "dead"
        account = ctx.registry.get(row.account_id)
        lease = Lease(ctx.locks, account_id, token, engine=ctx.engine, row=row, now=ctx.clock.now)
        with structlog.contextvars.bound_contextvars(account=account.id, task=row.id,
                                                     kind=row.kind, attempt=row.attempts), held(lease):
            try:
                outcome = job(ctx, row, account)
            except ClaimTaken:
                return _taken_over(row)
            except Exception as exc:  # noqa: BLE001 - every failure is retried or dead-lettered
                return _failed(task, ctx, row, exc)
        log.info("account task done", account=account.id, kind=row.kind, task=row.id, **{
            k: v for k, v in outcome.items() if k in ("planned", "sent", "adopted", "equity")})
        _count_final(ctx, row)
        return "done"
    finally:
        ctx.locks.release(account_id, token)


def _taken_over(row: store.TaskRow) -> str:
    """This execution lost its claim to a later delivery of the same task (RabbitMQ
    redelivered the message after a lost connection while this one ran on): that one
    finishes the task from what is recorded; this one stops and writes nothing more."""
    log.warning("account task taken over by a later delivery; this one stops",
                task=row.id, account=row.account_id, attempt=row.attempts)
    return "taken over"


def _failed(task: Task, ctx: WorkerContext, row: store.TaskRow, exc: Exception) -> str:
    error = mask_text(f"{type(exc).__name__}: {exc}")
    if is_transient(exc):
        retries = store.mark_retrying(ctx.engine, row, error)
        if retries is None:
            return _taken_over(row)
        if retries <= ctx.settings.max_retries:
            countdown = backoff(ctx.settings).delay(retries - 1)
            log.warning("account task retried", task=row.id, account=row.account_id,
                        retry=retries, countdown=round(countdown, 2), error=error)
            raise task.retry(countdown=countdown)
        error = f"{error} (after {retries - 1} retries)"
    _dead_letter(ctx, row, error)
    return "dead"


def _dead_letter(ctx: WorkerContext, row: store.TaskRow, error: str) -> None:
    """The account's task gives up: its row is dead and an incident says why; the
    batch's other accounts go on."""
    now = ctx.clock.now()
    if not store.mark_dead(ctx.engine, row, now, error):
        _taken_over(row)
        return
    account = ctx.registry.find(row.account_id)
    broker_id = account.broker_account_id if account else None
    message = (f"account {row.account_id} ({broker_id}): {row.kind} of batch {row.run_id} "
               f"for {row.day} failed: {error}")
    tradelog = ctx.tradelog(row.run_id)
    tradelog.incident(now, "dead_letter", message, {
        "account_id": row.account_id, "broker_account_id": broker_id, "run_id": row.run_id,
        "task_id": row.id, "kind": row.kind, "day": row.day.isoformat(),
        "attempts": row.attempts, "error": error,
    })
    log.error("account dead-lettered", account=row.account_id, task=row.id, error=error)
    _count_final(ctx, row)


def _total_key(ctx: WorkerContext, run_id: int) -> str:
    return f"{ctx.namespace}:batch:{run_id}:tasks"


def _count_final(ctx: WorkerContext, row: store.TaskRow) -> None:
    """The task that brings a batch's final count to its size closes the batch with its
    summary (the poll round also closes any batch whose count went astray)."""
    if row.kind != "rebalance":
        return
    key = f"{ctx.namespace}:batch:{row.run_id}:final"
    final = ctx.redis.incr(key)
    ctx.redis.expire(key, COUNTER_TTL)  # a batch's counters go with it (the poll round
    # closes a batch whose count went astray from the database alone)
    total = ctx.redis.get(_total_key(ctx, row.run_id))
    if total is not None and final >= int(total):
        finish_batch(ctx, row.run_id)


def finish_batch(ctx: WorkerContext, run_id: int) -> None:
    summary = store.finish_if_complete(ctx.engine, run_id, ctx.clock.now())
    if summary is not None:
        log.info("batch finished", run=run_id, **summary.as_dict())


# -- rounds the scheduler publishes -------------------------------------------------------


@app.task(bind=True, name="leverbot.platform.poll_round", max_retries=None)
def poll_round(self: Task) -> int:
    """Publish a poll for every account with open orders (one waiting per account),
    close any batch whose tasks are all final, and any decide that died without one."""
    ctx = _context_for(self, retried=False)  # the next round comes in 2 minutes
    for run_id in store.running_batches(ctx.engine, ctx.mode):
        finish_batch(ctx, run_id)
        _republish_stranded(ctx, run_id)
    interrupted = store.close_interrupted_decides(ctx.engine, ctx.mode, ctx.clock.now())
    if interrupted:
        log.warning("interrupted decides closed", runs=interrupted)
    run_id = store.latest_batch(ctx.engine, ctx.mode)
    if run_id is None:
        return 0
    wanted = [
        (run_id, account) for account in store.open_order_accounts(ctx.engine)
        if ctx.redis.set(_poll_key(ctx, account), 1, nx=True, ex=int(ctx.settings.lease_seconds))
    ]
    stamp = ctx.clock.now().strftime("%Y%m%dT%H%M%S")
    publish_each(poll, wanted, lambda a: f"poll-{a[1]}-{stamp}")
    return len(wanted)


#: how long a rebalance task may sit idle before the poll round publishes it again
STRANDED_AFTER = dt.timedelta(minutes=15)


def _republish_stranded(ctx: WorkerContext, run_id: int) -> None:
    """Publish again the batch's rebalance tasks whose message was lost (idle for
    STRANDED_AFTER), at most once per STRANDED_AFTER each. A copy that finds its task
    done, or running elsewhere, does nothing (store.claim), so publishing twice is safe."""
    lease = dt.timedelta(seconds=ctx.settings.lease_seconds)
    stranded = [
        row for row in store.stranded_rebalances(ctx.engine, run_id, ctx.clock.now(), STRANDED_AFTER, lease)
        if ctx.redis.set(f"{ctx.namespace}:republished:{row.id}", 1, nx=True,
                         ex=int(STRANDED_AFTER.total_seconds()))
    ]
    if stranded:
        log.warning("stranded tasks published again", run=run_id, tasks=[r.id for r in stranded])
        publish_each(rebalance, [(r.id, r.account_id) for r in stranded],
                     lambda r: f"rebalance-{run_id}-{r[0]}")


def _poll_key(ctx: WorkerContext, account_id: int) -> str:
    return f"{ctx.namespace}:poll-queued:{account_id}"


@app.task(bind=True, name="leverbot.platform.poll", max_retries=None, **_INFRASTRUCTURE)
def poll(self: Task, run_id: int, account_id: int) -> int:
    """Follow one account's open orders (a failed poll is logged; the next round retries)."""
    ctx = _context_for(self, retried=False)  # the next round polls again
    delivery = self.request.id
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    token = ctx.locks.acquire(account_id, delivery, redelivered=redelivered)
    if token is None:
        raise self.retry(countdown=BUSY_DELAY)
    try:
        ctx.redis.delete(_poll_key(ctx, account_id))
        account = ctx.registry.get(account_id)
        with held(Lease(ctx.locks, account_id, token)):
            return account_jobs.poll(ctx, run_id, account)
    except Exception as exc:  # noqa: BLE001 - the next round polls again
        error = mask_text(f"{type(exc).__name__}: {exc}")
        log.error("account poll failed", account=account_id, error=error)
        if not is_transient(exc):
            ctx.tradelog(run_id).incident(ctx.clock.now(), "job:poll", error,
                                          {"account_id": account_id})
        return 0
    finally:
        ctx.locks.release(account_id, token)


@app.task(bind=True, name="leverbot.platform.close_round", max_retries=None)
def close_round(self: Task, day: str) -> int:
    """A close task for every active account, under the latest batch's run."""
    ctx = _context_for(self)
    run_id = store.latest_batch(ctx.engine, ctx.mode)
    if run_id is None:
        return 0
    rows = store.close_tasks(ctx.engine, run_id, dt.date.fromisoformat(day))
    publish_each(close, [(r.id, r.account_id) for r in rows], lambda r: f"close-{run_id}-{r[0]}")
    return len(rows)
