"""The budget and rate-limit steps of one configuration, over the state that outlives it.

Built at start and on every reload (so changed budgets, limits and prices apply at once); the
state (`Settings.state`) carries over, so spend and windows survive a reload. A budget the
state does not hold yet (at start, or added or changed by a reload) starts from the recorded
cost of its current period.
"""

from __future__ import annotations

import logging

from aibridge.admission.budgets import BudgetBook, Budgets, Notify, prime_from_records
from aibridge.admission.limits import LimitBook, RateLimits
from aibridge.recording.db_errors import RecordingError
from aibridge.settings import Settings

logger = logging.getLogger("aibridge")


def build_policies(settings: Settings, *, notify: Notify | None = None
                   ) -> tuple[Budgets | None, RateLimits | None]:
    config = settings.config
    team_key = config.budgets_settings.team_key
    budgets = limits = None
    if config.budgets:
        book = BudgetBook(config.budgets, config.budgets_settings, settings.state,
                          settings.prices, notify=notify)
        recording = config.recording
        if recording.enabled:
            try:
                prime_from_records(book, recording.url, settings.base_dir)
            except RecordingError as e:
                logger.error(f"aibridge: budgets: cannot read the recorded spend ({e}); budgets "
                             "not yet known count from zero until the records can be read")
        else:
            logger.warning("aibridge: budgets: recording is off, so spend starts from zero at "
                           "every start")
        budgets = Budgets(book)
    if config.limits:
        limits = RateLimits(LimitBook(config.limits, team_key, settings.state))
    return budgets, limits
