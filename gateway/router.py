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

Stability is judged by receive time, as of the ingest watermark: the
acceptance time of the oldest entry still waiting in a spool (or now, when
every spool is empty). Everything accepted before it is indexed, so a study
is routed only when none of its instances arrived within
``stable_after_seconds`` before the watermark; one whose instances may still
wait in a spool waits with them. The spools are this node's and, through the
database, those of the other nodes sharing it: each node reports its
backlog every poll (:func:`report_spool`, :mod:`storage.nodes`), and reports
older than three polls (a node that stopped) are left out. Quarantined studies are not
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
    with session_scope(app.engine, readonly=True) as session:
        others = nodes.oldest_waiting(
            session, moment - timedelta(seconds=3 * forward.poll_seconds + 10))
    waiting = min((w for w in (app.spool.oldest(), others) if w is not None), default=None)
    # everything accepted before the watermark is indexed: stability is judged as of then
    watermark = moment if waiting is None else min(moment, waiting)
    if watermark <= moment - timedelta(seconds=forward.stable_after_seconds):
        logger.info("route sweep judges stability as of %s: ingest is behind",
                    watermark.isoformat(timespec="seconds"))
    routed = 0
    with session_scope(app.engine) as session:
        due = jobs.unrouted_stable(session, watermark, forward.stable_after_seconds)
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
