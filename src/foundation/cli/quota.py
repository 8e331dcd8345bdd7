"""``foundation quota set|show TENANT``: an admin's view of a tenant's quotas.

* ``foundation quota set acme --max-agents 1000 --max-calls-per-second 5000`` sets those
  limits (the others the tenant already has are kept; ``--unset FIELD`` removes one,
  ``--clear`` all of them). Every node enforces the new quota as soon as its watch delivers it.
* ``foundation quota show acme [--json]`` prints each quota of the tenant with its use now
  (agents from the registry, state bytes and the last second's calls and casts as the nodes
  publish them, this minute's LLM tokens).
* ``foundation quota jetstream acme --dir DIR [--disk-storage 20G --streams 200 ...]`` shows,
  or changes on the running servers, the JetStream limits of the tenant's NATS account (see
  :func:`foundation.security.change_tenant_limits`; ``DIR`` is the secure setup, whose keys
  sign the account).

Both take ``--nats`` and ``--creds`` / ``--tls-ca`` (an admin's credentials on a secure
cluster). Results go to standard output, errors to standard error (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from foundation import _wire as wire
from foundation._errors import NatsUnavailableError
from foundation._ids import check_token
from foundation.cli import options
from foundation.cli.secure import add_auth_arguments, auth_from_args
from foundation.nats.kv import KV, BucketSpec
from foundation.security import (
    TenantLimits,
    change_tenant_limits,
    load_secure_setup,
    open_connection,
    permission_monitor,
    tenant_jetstream,
)
from foundation.tenancy import QUOTA_FIELDS, Quota, QuotaStore, quota_usage

__all__ = ["add_quota_parser", "run_quota"]

_FIELD_TYPES: dict[str, Any] = {
    "max_agents": options.non_negative_int,
    "max_state_bytes": options.non_negative_int,
    "max_calls_per_second": options.positive_rate,
    "max_casts_per_second": options.positive_rate,
    "max_llm_tokens_per_minute": options.non_negative_int,
}


def add_quota_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], nats: str) -> None:
    """Add the ``quota`` subcommand with ``set`` and ``show`` (``nats``: the default URL)."""
    fmt = options.HelpFormatter
    quota = sub.add_parser("quota", help="set or show a tenant's quotas", formatter_class=fmt)
    verbs = quota.add_subparsers(dest="quota_command", required=True)
    set_ = verbs.add_parser("set", help="set a tenant's quotas", formatter_class=fmt)
    show = verbs.add_parser("show", help="a tenant's quotas and use now", formatter_class=fmt)
    for p in (set_, show):
        p.add_argument("tenant", help="the tenant")
        p.add_argument("--nats", default=nats, help=options.nats_help())
        add_auth_arguments(p)
    for name in QUOTA_FIELDS:
        doc = Quota.model_fields[name].description or name.replace("_", " ")
        set_.add_argument(f"--{name.replace('_', '-')}", type=_FIELD_TYPES[name], help=doc)
    set_.add_argument(
        "--unset", action="append", choices=QUOTA_FIELDS, default=[], help="remove this limit"
    )
    set_.add_argument("--clear", action="store_true", help="remove every limit of the tenant")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_jetstream_parser(verbs, nats)


_JS_LIMITS: dict[str, tuple[Any, str]] = {
    "disk_storage": (options.byte_size, "bytes of file storage, all streams (e.g. 20G; -1: none)"),
    "mem_storage": (options.byte_size, "bytes of memory storage, all streams (e.g. 1G)"),
    "streams": (options.count_or_unlimited, "streams, KV buckets included"),
    "consumers": (options.count_or_unlimited, "consumers, all streams together"),
}


def _add_jetstream_parser(verbs: Any, nats: str) -> None:
    fmt = options.HelpFormatter
    js = verbs.add_parser(
        "jetstream",
        help="show or change the JetStream limits of a tenant's NATS account",
        formatter_class=fmt,
    )
    js.add_argument("tenant", help="the tenant (an account of the setup)")
    js.add_argument(
        "--dir",
        required=True,
        type=Path,
        help="the secure setup directory (`foundation up --secure --tenants ... --dir DIR`); "
        "its keys sign the account",
    )
    js.add_argument("--nats", default=nats, help=options.nats_help())
    for name, (kind, doc) in _JS_LIMITS.items():
        js.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"new limit: {doc}")
    js.add_argument("--json", action="store_true", help="print JSON instead of a table")


async def run_quota(args: argparse.Namespace, console: Console) -> int:
    """Run ``quota set``, ``show`` or ``jetstream``; returns the exit status."""
    tenant = _tenant(args.tenant)
    if args.quota_command == "jetstream":
        return await _run_jetstream(args, console, tenant)
    nc = await open_connection(
        args.nats, auth_from_args(args), name="foundation-quota", max_reconnect_attempts=0
    )
    try:
        return await _run(args, console, nc, tenant)
    except NatsUnavailableError as exc:
        # a refused request times out: say it was refused when the server told us so
        with contextlib.suppress(ValueError):
            denied = permission_monitor(nc).denied
            if denied:
                raise denied[-1] from exc
        raise
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _run(args: argparse.Namespace, console: Console, nc: Any, tenant: str) -> int:
    """``set`` or ``show`` on the open connection ``nc``."""
    if args.quota_command == "set":
        store = QuotaStore(nc)
        await store.start()
        try:
            quota = _merged(store.get(tenant), args)
            await store.set(tenant, quota)
        finally:
            await store.stop()
        console.print(f"quota of [bold]{tenant}[/bold] set: {_summary(quota)}")
        return 0
    kv = await KV.open(nc, BucketSpec(wire.QUOTA_BUCKET))
    registry = None
    with contextlib.suppress(Exception):
        registry = await KV.open(nc, BucketSpec(wire.REGISTRY_BUCKET))
    report = await quota_usage(kv, registry, tenants=[tenant])
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    render(console, tenant, report[tenant])
    return 0


def _tenant(value: str) -> str:
    return check_token("tenant", value, key=True)


def _merged(current: Quota | None, args: argparse.Namespace) -> Quota:
    values: dict[str, Any] = {} if args.clear or current is None else current.model_dump()
    for name in QUOTA_FIELDS:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    for name in args.unset:
        values[name] = None
    return Quota(**values)


def _summary(quota: Quota) -> str:
    limits = quota.limits()
    return ", ".join(f"{k}={v:g}" for k, v in limits.items()) or "no limits"


def render(console: Console, tenant: str, rows: dict[str, dict[str, Any]]) -> None:
    """Print ``tenant``'s quotas and use as a table."""
    table = Table(title=f"quotas of {tenant}")
    for col in ("quota", "limit", "used"):
        table.add_column(col)
    for name, row in rows.items():
        limit = row.get("limit")
        table.add_row(
            name, "—" if limit is None else f"{float(limit):g}", f"{float(row['used']):g}"
        )
    console.print(table)


async def _run_jetstream(args: argparse.Namespace, console: Console, tenant: str) -> int:
    """Show, or change then show, the tenant account's JetStream limits and use."""
    setup = load_secure_setup(args.dir)
    if tenant not in setup.tenants:
        raise ValueError(
            f"{setup.dir} has no tenant {tenant!r} (tenants: {', '.join(setup.tenants) or 'none'})"
        )
    given = {k: getattr(args, k) for k in _JS_LIMITS if getattr(args, k) is not None}
    if given:
        limits = TenantLimits(**{**asdict(setup.limits.get(tenant, TenantLimits())), **given})
        setup = await change_tenant_limits(args.nats, setup, tenant, limits)
    report = await tenant_jetstream(args.nats, setup, tenant)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    title = f"JetStream of {tenant}" + (" (changed)" if given else "")
    table = Table(title=title)
    for col in ("limit", "max", "used"):
        table.add_column(col)
    used = report["used"]
    for name, use in (
        ("disk_storage", used["storage"]),
        ("mem_storage", used["memory"]),
        ("streams", used["streams"]),
        ("consumers", used["consumers"]),
    ):
        limit = report["limits"][name]
        sized = name.endswith("storage")
        table.add_row(name, _js_value(limit, sized), _js_value(use, sized))
    console.print(table)
    return 0


def _js_value(value: Any, sized: bool) -> str:
    if not isinstance(value, int):
        return "—"
    if value < 0:
        return "no limit"
    if not sized:
        return str(value)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.4g} {unit}"
    return f"{value} B"
