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
behind: as long as the spool holds an entry accepted before the stability
cut-off, an instance of a "stable" study may not be indexed yet, and no
study is routed. Quarantined studies are not swept (their state is not
active); once released they are. Each routed study gets an audit record naming the routes
that matched and the destinations (no PHI). Safe on several nodes at once:
on PostgreSQL the studies are locked ``SKIP LOCKED`` until the sweep's
transaction commits.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import storage.audit as audit
import storage.jobs as jobs
import storage.routes as routes
from storage.db import session_scope

from .app import App
from .routing import destinations, evaluate, is_held, load_facts

__all__ = ["route_stable"]

logger = logging.getLogger(__name__)


def route_stable(app: App, now: datetime | None = None) -> int:
    """Route every study that is due now (see the module docstring); how many were routed."""
    moment = now or datetime.now(UTC)
    waiting = app.spool.oldest()
    if waiting is not None and waiting <= moment - timedelta(
            seconds=app.settings.forward.stable_after_seconds):
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
