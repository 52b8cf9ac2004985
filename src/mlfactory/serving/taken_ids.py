"""One request id names one request in the prediction log, even when clients choose them.

A client may choose its request's id (`X-Request-ID`), and may choose one that a logged
prediction already has (a retry, a client reusing ids, or one guessing another's). The writer
gives such a request a new random id in the transaction that commits its rows
(`give_taken_ids_new_ones`); the request answers with it and keeps the chosen one in
`requested_id`.

Looking the id up is not enough when two workers, or replicas, commit the same chosen id at
the same moment: neither sees the other's uncommitted rows. So the transaction also claims every
chosen id it keeps, a row of `chosen_request_ids` whose primary key is the id. The database lets
one of two claims of an id through and makes the other wait for it: once the first commits, the
second fails on the key (`IntegrityError`), and the writer commits its group again
(`CLAIM_ATTEMPTS`), this time finding the id taken. No lock of our own, on every database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select, union

from mlfactory.serving.log_tables import chosen_request_ids, predictions
from mlfactory.serving.request_ids import new_request_id

if TYPE_CHECKING:
    from mlfactory.serving.prediction_log import LoggedPrediction

# Commits of one group whose claim of a chosen id lost to another writer's: the second attempt
# finds the id taken, so one more is for a third writer that chose the same id meanwhile.
CLAIM_ATTEMPTS = 3


def chooses_ids(requests: Sequence[Sequence[LoggedPrediction]]) -> bool:
    """Whether a client chose the id of any of `requests` (the rows of each)."""
    return any(_chosen(rows) for rows in requests)


def give_taken_ids_new_ones(
    connection: Connection, requests: Sequence[Sequence[LoggedPrediction]]
) -> None:
    """Give a new random id to each request (its rows) whose client chose an id that a logged
    prediction, a claim, or an earlier request of `requests` has already; its `requested_id`
    stays. Claim every chosen id kept, in `connection`'s transaction.

    One indexed query and one insert, and only when some request's id was chosen by its client.

    Raises:
        IntegrityError: another transaction claimed one of the ids kept first (try again).
    """
    chosen = [rows for rows in requests if _chosen(rows)]
    if not chosen:
        return
    wanted = {rows[0].request_id for rows in chosen}
    logged = select(predictions.c.request_id).where(predictions.c.request_id.in_(wanted))
    claimed = select(chosen_request_ids.c.request_id).where(
        chosen_request_ids.c.request_id.in_(wanted)
    )
    taken = set(connection.scalars(union(logged, claimed)))
    claims = []
    for rows in chosen:
        request_id = rows[0].request_id
        if request_id in taken:
            request_id = new_request_id()
            for row in rows:
                row.request_id = request_id
        else:
            claims.append({"request_id": request_id, "ts": rows[0].ts})
        taken.add(request_id)
    if claims:
        connection.execute(insert(chosen_request_ids), claims)


def _chosen(rows: Sequence[LoggedPrediction]) -> bool:
    return bool(rows) and rows[0].request_id == rows[0].requested_id
