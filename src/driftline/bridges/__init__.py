"""Bridges: deliver the alert topic to the systems that wake people up.

Each bridge is a consumer of the alert topic, in a consumer group of its own,
that turns every alert message into one HTTP request:

* :mod:`~driftline.bridges.pagerduty`: PagerDuty Events API v2 (trigger on
  ``firing``, resolve on ``resolved``, same dedup key);
* :mod:`~driftline.bridges.webhook`: one JSON POST per alert, signed with
  HMAC-SHA256 when a secret is set, or a Slack-compatible ``{"text": ...}``.

The request building is pure (the two modules above and
:mod:`~driftline.bridges.alert`); what is shared, the retry rules
(:mod:`~driftline.bridges.retry`) and the at-least-once consume, deliver,
commit loop (:mod:`~driftline.bridges.delivery`), lives once.
"""
