"""``flask cloudclients …``: look at the configuration, create resources, publish.

Registered on every app by ``init_app``. Commands run in the app's context with
its settings, so they talk to exactly what the app talks to (an emulator in
development, the project in production)::

    flask cloudclients status [--json]
    flask cloudclients create-topic orders
    flask cloudclients create-subscription orders-worker --topic orders
    flask cloudclients create-bucket receipts
    flask cloudclients publish orders '{"id": 1}' --attr kind=created

The ``create-*`` commands are idempotent: a resource that already exists with
the same settings is reported as ``exists`` with exit status 0; one that exists
with *different* settings is an error (exit status 1), never silently changed.
Errors are one line: ``Error: <what failed>: <the service's message>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from ._clients import ClientRegistry
from ._config import ConfigError, Settings
from ._names import resolve_subscription, resolve_topic
from ._push_audit import audit_push_endpoints
from ._state import app_state

__all__ = ["cli"]

cli = AppGroup("cloudclients", help="Inspect cloudclients settings and create Pub/Sub and Storage resources.")


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Settings (secrets redacted), emulator or cloud, and the clients alive in this process.

    Exits with status 1 when a push endpoint can never accept a push (each is listed as PROBLEM).
    """
    state = app_state()
    settings = state.settings
    report: dict[str, Any] = {
        "pid": os.getpid(),
        "project": _project(state.registry),
        "pubsub": f"emulator at {settings.pubsub_emulator_host}" if settings.pubsub_emulator else "cloud",
        "storage": f"emulator at {settings.storage_emulator_host}" if settings.storage_emulator else "cloud",
        "push_auth": _push_auth(settings),
        "push_problems": audit_push_endpoints(current_app._get_current_object()),  # type: ignore[attr-defined]
        "settings": settings.redacted(),
        "registry": dict(state.registry.stats()),
        "background": [sub.stats() for sub in state.subscriptions],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        _print_status(report)
    if report["push_problems"]:
        raise SystemExit(1)  # CI and deploy scripts can fail on it


def _print_status(report: dict[str, Any]) -> None:
    click.echo(f"cloudclients on project {report['project']} (pid {report['pid']})")
    click.echo(f"  Pub/Sub:   {report['pubsub']}")
    click.echo(f"  Storage:   {report['storage']}")
    click.echo(f"  push auth: {report['push_auth']}")
    for problem in report["push_problems"]:
        click.echo(f"  PROBLEM: {problem}")
    click.echo("  clients in this process:")
    for name, client in report["registry"]["clients"].items():
        alive = f"alive (built {client['constructions']}x)" if client["alive"] else "not built"
        click.echo(f"    {name:<11} {alive}")
    click.echo("  background subscriptions:" + ("" if report["background"] else " none"))
    for sub in report["background"]:
        click.echo(f"    {sub['subscription']} ({'running' if sub['running'] else 'not running'} in this process)")
    click.echo("  settings:")
    for key, value in sorted(report["settings"].items()):
        click.echo(f"    {key} = {value!r}")


def _push_auth(settings: Settings) -> str:
    mode = settings.push_auth
    if mode is None:
        return "not configured: push endpoints answer 500 (set CLOUDCLIENTS_PUSH_AUDIENCE or CLOUDCLIENTS_PUSH_AUTH)"
    if mode in ("oidc", "oidc_or_emulator"):
        who = f", service account {settings.push_service_account}" if settings.push_service_account else ""
        extra = "; tokenless pushes from the emulator accepted" if mode == "oidc_or_emulator" else ""
        audience = settings.push_audience or "none: each endpoint passes audience="
        return f"verify OIDC tokens (audience {audience}{who}){extra}"
    if mode == "platform":
        return "platform-authenticated: no token checked here (Cloud Run IAM / IAP in front)"
    return "unauthenticated pushes allowed (emulator only)"


@cli.command("create-topic")
@click.argument("name")
def create_topic(name: str) -> None:
    """Create topic NAME (short name or projects/P/topics/T) unless it exists."""
    state = app_state()
    path = _name(resolve_topic, name, lambda: state.registry.project)
    with _admin() as admin:
        _report(admin.create_topic(state.registry, path), path)


@cli.command("create-subscription")
@click.argument("name")
@click.option("--topic", required=True, help="Topic to subscribe to (short name or full).")
@click.option("--ack-deadline", type=click.IntRange(10, 600), default=60, show_default=True,
              help="Seconds a pulled message stays leased before redelivery.")
@click.option("--push-endpoint", default=None, help="Make it a push subscription to this URL.")
@click.option("--push-audience", default=None, help="OIDC token audience for pushes (default: the endpoint URL).")
@click.option("--push-service-account", default=None, help="Service account that signs push tokens.")
def create_subscription(  # noqa: PLR0917 (click passes the options by keyword)
    name: str, topic: str, ack_deadline: int, push_endpoint: str | None,
    push_audience: str | None, push_service_account: str | None,
) -> None:
    """Create subscription NAME on --topic unless it exists (same topic and endpoint)."""
    state = app_state()
    def project() -> str:
        return state.registry.project

    path = _name(resolve_subscription, name, project)
    topic_path = _name(resolve_topic, topic, project)
    if (push_audience or push_service_account) and not push_endpoint:
        raise click.UsageError("--push-audience and --push-service-account need --push-endpoint.")
    request: dict[str, Any] = {"name": path, "topic": topic_path, "ack_deadline_seconds": ack_deadline}
    if push_endpoint:
        push: dict[str, Any] = {"push_endpoint": push_endpoint}
        if push_service_account:
            push["oidc_token"] = {"service_account_email": push_service_account,
                                  "audience": push_audience or push_endpoint}
        request["push_config"] = push
    with _admin() as admin:
        _report(admin.create_subscription(state.registry, request), path)


@cli.command("create-bucket")
@click.argument("name")
@click.option("--location", default=None, help="Bucket location (default: the service's, US).")
def create_bucket(name: str, location: str | None) -> None:
    """Create Storage bucket NAME unless this project already has it."""
    state = app_state()
    with _admin() as admin:
        _report(admin.create_bucket(state.registry, name, location), f"gs://{name}")


@cli.command("publish")
@click.argument("topic")
@click.argument("data")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="A message attribute (repeatable).")
@click.option("--ordering-key", default="", help="Ordering key (needs CLOUDCLIENTS_ENABLE_MESSAGE_ORDERING).")
def publish(topic: str, data: str, attrs: tuple[str, ...], ordering_key: str) -> None:
    """Publish DATA ('-' reads standard input) to TOPIC and print the message ID once confirmed."""
    state = app_state()
    path = _name(resolve_topic, topic, lambda: state.registry.project)
    attributes: dict[str, str] = {}
    for item in attrs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--attr")
        attributes[key] = value
    payload = sys.stdin.buffer.read() if data == "-" else data.encode("utf-8")
    with _admin() as admin:
        message_id = admin.publish(state.registry, path, payload, ordering_key=ordering_key, attributes=attributes,
                                   timeout=state.settings.publish_timeout + 5)
    click.echo(message_id)


@contextlib.contextmanager
def _admin() -> Iterator[ModuleType]:
    """The module of administrative calls (imported here, when a command calls Google: `import cloudclients`
    stays light); a failed call as click's ``Error: <what failed>: <the service's message>``, exit status 1."""
    from ._google import admin

    try:
        yield admin
    except admin.AdminError as exc:
        raise click.ClickException(str(exc)) from None


def _report(created: bool, what: str) -> None:
    click.echo(f"{'created' if created else 'exists'} {what}")


def _name(resolve: Any, name: str, project: Callable[[], str]) -> str:
    try:
        return str(resolve(name, project))
    except ValueError as exc:  # ConfigError (no project anywhere) included
        raise click.BadParameter(str(exc)) from None


def _project(registry: ClientRegistry) -> str:
    try:
        return registry.project
    except ConfigError as exc:
        return f"unset ({exc})"
