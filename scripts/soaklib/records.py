"""What the bridge recorded during the soak, read from its SQLite database after shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

ROUTES = {"/v1/chat/completions": "chat", "/v1/responses": "responses",
          "/v1/messages": "messages"}


@dataclass
class Records:
    interceptions: int = 0
    ended: int = 0
    unended: list[dict] = field(default_factory=list)  # up to 20, as evidence
    unended_count: int = 0
    orphan_ends: int = 0  # end rows without their interception
    outcomes: dict[str, int] = field(default_factory=dict)
    by_scenario: dict[str, int] = field(default_factory=dict)  # "chat/stream" -> count
    completed_by_scenario: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # "failed 502 server_error" -> count


def read(db: Path) -> Records:
    engine = sa.create_engine(f"sqlite:///{db}")
    rec = Records()
    try:
        with engine.connect() as c:
            def scalar(sql: str) -> int:
                return int(c.execute(sa.text(sql)).scalar_one())

            rec.interceptions = scalar("SELECT count(*) FROM interceptions")
            rec.ended = scalar("SELECT count(*) FROM interceptions i "
                               "JOIN interception_ends e ON e.id = i.id")
            rec.unended_count = scalar("SELECT count(*) FROM interceptions i LEFT JOIN "
                                       "interception_ends e ON e.id = i.id WHERE e.id IS NULL")
            rec.orphan_ends = scalar("SELECT count(*) FROM interception_ends e LEFT JOIN "
                                     "interceptions i ON i.id = e.id WHERE i.id IS NULL")
            rec.unended = [dict(r._mapping) for r in c.execute(sa.text(
                "SELECT i.id, i.started_at, i.route, i.model, i.streaming FROM interceptions i "
                "LEFT JOIN interception_ends e ON e.id = i.id WHERE e.id IS NULL "
                "ORDER BY i.started_at LIMIT 20"))]
            for outcome, n in c.execute(sa.text(
                    "SELECT outcome, count(*) FROM interception_ends GROUP BY outcome")):
                rec.outcomes[outcome] = n
            for route, streaming, outcome, n in c.execute(sa.text(
                    "SELECT i.route, i.streaming, e.outcome, count(*) FROM interceptions i "
                    "LEFT JOIN interception_ends e ON e.id = i.id "
                    "GROUP BY i.route, i.streaming, e.outcome")):
                name = ROUTES.get(route, route) + ("/stream" if streaming else "")
                rec.by_scenario[name] = rec.by_scenario.get(name, 0) + n
                if outcome == "completed":
                    rec.completed_by_scenario[name] = n
            for outcome, status, error_type, n in c.execute(sa.text(
                    "SELECT outcome, status, error_type, count(*) FROM interception_ends "
                    "WHERE outcome != 'completed' GROUP BY outcome, status, error_type "
                    "ORDER BY count(*) DESC")):
                rec.errors[f"{outcome} {status} {error_type}"] = n
    finally:
        engine.dispose()
    return rec
