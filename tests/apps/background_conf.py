"""gunicorn config for tests/apps/background_app.py: the documented hooks."""

from cloudclients import gunicorn_post_worker_init as post_worker_init
from cloudclients import gunicorn_worker_exit as worker_exit

__all__ = ["post_worker_init", "worker_exit"]
