"""Alerts: the box tells its owner when something that matters fails, once when it starts
and once when it is resolved (docs/alerts.md).

facts (what is looked at) → conditions (pure verdicts) → state (transitions, queue) →
delivery (retries with backoff) → senders (SMTP, HTTP POST). gather reads a box's
facts; check runs one round; hooks call it from other jobs without ever failing them.
"""
