"""The stability sweep: stable studies meet the routes, and matching routes queue jobs.

ARCHITECTURE.md, routing and forwarding. :func:`route_stable` takes the
studies that are active, quiet for ``forward.stable_after_seconds`` and not
routed since their last instance was indexed
(:func:`storage.jobs.unrouted_stable`), evaluates every route on each
(:func:`gateway.routing.evaluate`), and queues one job per destination of
the matching routes (:func:`storage.jobs.enqueue`: only the instances that
destination has not yet received, so a study routed again after late
instances gets a follow-up with just those, and a changed route never
re-sends what was delivered). The job's priority is the route's, negated:
routes with a lower priority number are evaluated and sent first.

Stability is judged by receive time, so the sweep waits while ingest is
behind: as long as a spool holds an entry accepted before the stability
cut-off, an instance of a "stable" study may not be indexed yet, and no
study is routed. That is this node's spool and, through the database, the
spools of the other nodes sharing it: each node reports its backlog every
poll (:func:`report_spool`, :mod:`storage.nodes`), and reports older than
three polls (a node that stopped) are left out. Quarantined studies are not
swept (their state is not active); once released they are. Each routed study
gets an audit record naming the routes that matched and the destinations (no
PHI). Safe on several nodes at once: on PostgreSQL the studies are locked
``SKIP LOCKED`` until the sweep's transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from datetime import UTC, datetime, timedelta

import storage.audit as audit
import storage.jobs as jobs
import storage.nodes as nodes
import storage.routes as routes
from storage.db import session_scope

from .app import App
from .routing import destinations, evaluate, is_held, load_facts

__all__ = ["node_name", "report_spool", "route_stable"]

logger = logging.getLogger(__name__)


def node_name(app: App) -> str:
    """This node as the spool reports name it: host name and a digest of its spool folder."""
    folder = str(app.spool.root.resolve()).encode("utf-8")
    return f"{socket.gethostname()[:100]}:{hashlib.sha256(folder).hexdigest()[:16]}"


def report_spool(app: App, now: datetime | None = None) -> None:
    """Tell the other nodes when the oldest entry waiting in this node's spool was accepted."""
    with session_scope(app.engine) as session:
        nodes.report(session, node_name(app), app.spool.oldest(), now or datetime.now(UTC))


def route_stable(app: App, now: datetime | None = None) -> int:
    """Route every study that is due now (see the module docstring); how many were routed."""
    moment = now or datetime.now(UTC)
    forward = app.settings.forward
    cutoff = moment - timedelta(seconds=forward.stable_after_seconds)
    waiting = app.spool.oldest()
    if waiting is None or waiting > cutoff:
        with session_scope(app.engine, readonly=True) as session:
            waiting = nodes.oldest_waiting(
                session, moment - timedelta(seconds=3 * forward.poll_seconds + 10))
    if waiting is not None and waiting <= cutoff:
        logger.info("route sweep waits: ingest is behind (oldest spool entry %s)",
                    waiting.isoformat(timespec="seconds"))
        return 0
    routed = 0
    with session_scope(app.engine) as session:
        due = jobs.unrouted_stable(session, moment, app.settings.forward.stable_after_seconds)
        if not due:
            return 0
        rules = routes.list_all(session)
        for uid in due:
            facts = load_facts(session, uid)
            if facts is None or is_held(facts):
                continue
            decisions = evaluate(rules, facts)
            queued = []
            for decision in decisions:
                if not decision.matched:
                    continue
                for slug in decision.destinations:
                    job = jobs.enqueue(session, uid, slug, moment, route=decision.route,
                                       priority=-decision.priority)
                    if job is not None:
                        queued.append(f"{slug}:{job.id}")
            jobs.mark_routed(session, uid, moment)
            matched = [d.route for d in decisions if d.matched]
            audit.record(session, "route", "gateway", "success", study_instance_uid=uid,
                         detail=f"routes={','.join(matched) or '-'} jobs={','.join(queued) or '-'}")
            logger.info("route study=%s routes=%s destinations=%s jobs=%s", uid,
                        ",".join(matched) or "-", ",".join(destinations(decisions)) or "-",
                        ",".join(queued) or "-")
            routed += 1
    return routed
