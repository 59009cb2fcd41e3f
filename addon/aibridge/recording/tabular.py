"""The machine formats every report shares: JSON (a list of objects) and CSV (a header row),
from the column names and each row's values in that order."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence


def json_or_csv(fmt: str, header: Sequence[str],
                records: Iterable[Sequence[object]]) -> str | None:
    """The report in `fmt` when it is json or csv; None for any other (the caller's table).
    `records` is only iterated for those two, so a generator costs nothing for a table."""
    if fmt == "json":
        return json.dumps([dict(zip(header, values, strict=True)) for values in records],
                          indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(records)  # None is written as an empty cell
        return out.getvalue()
    return None
