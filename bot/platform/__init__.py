"""The advisory platform's batch engine: many client accounts traded from one weekly
decision per profile, one Celery task per account (RabbitMQ carries them, `bot worker`
runs them, `bot run --platform` schedules them), a shared request budget in Redis.

    settings.py         the queue, Redis, the broker's request budget (environment)
    decision.py         the weekly decision: each profile's targets once, a task per account
    profile_targets.py  the profile's targets as each account engine's target model
    account_jobs.py     one account's rebalance (plan, then send), poll and close
    tasks.py            the Celery app and tasks: delivery, retries, dead letters
    store.py            batch and task rows in the trade log, summaries
    throttle.py         the Redis token bucket and the account locks
    lease.py            keeping an account's lock and task claim while its task works
    context.py          what a worker process keeps between tasks
    scheduler.py        `bot run --platform`: publishes on the session timetable
"""
