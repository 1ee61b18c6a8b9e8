"""A synthetic SaaS business: believable event streams for the demo, the tests and the benchmark.

Deterministic, standard library only. Used by ``revpulse demo`` (:func:`~revpulse.synth.delivery.live`), by tests
and by the benchmark (:func:`~revpulse.synth.delivery.generate`), and to exercise the dead-letter path
(:func:`~revpulse.synth.bad_records.bad_records`). Every generated event is valid per SPEC §1; the only deliberate
irregularities are out-of-order (late) deliveries, within 3 days of event time, and re-sent duplicates (same
``event_id``, same body).

Modules: ``config`` (:class:`~revpulse.synth.config.SynthConfig`, topics, time units and helpers), ``model`` (the
simulated entities), ``simulation`` (the scheduler that runs the business in event-time order), one mixin module per
area of the business (``accounts``, ``funnel``, ``billing``, ``product``, ``marketing``), ``delivery`` (late
deliveries and duplicates; ``generate`` and ``live``) and ``bad_records``.

Business model (``accounts`` = size of the account base at ``start``):

* **Opening book.** About 60 % of the accounts are paying customers whose ``subscription.started`` arrive in the
  first 6 hours (an import of the existing book, preceded by an ``account.updated`` with name and segment for most
  of them); 12 % of those also have an add-on subscription. A few accounts are mid-trial, some are a backlog of
  prospects that enter the funnel over the first two weeks, some have an opportunity opened before ``start`` that
  closes in the first month (its ``won``/``lost`` refers to an opportunity the stream never created), the rest are
  dormant.
* **Segments.** ``smb`` (58 %), ``mid_market`` (27 %), ``enterprise`` (9 %), ``startup`` (3 %, not a configured
  segment → ``other``), none at all (3 %, → ``unknown``). ``account.updated`` sets the segment on arrival and
  occasionally changes it (smb → mid_market → enterprise, startup → smb) or just renames the account; lead,
  opportunity and subscription events sometimes carry the account's segment themselves.
* **New accounts** arrive every day (≈ 2.5 % of ``accounts`` per weekday, fewer on weekends): 30 % product-led
  (``product.signup`` → ``trial_started`` → maybe ``activated`` → self-serve subscription, or a lead for sales),
  70 % sales-led (``lead.created`` with a ``source`` channel). Some leads come from existing accounts.
* **Funnel.** ``lead`` → ``mql`` → ``sql`` → ``opportunity`` (+ ``opportunity.created`` with ``lead_id`` 95 % of the
  time) → ``customer`` on a win; ``disqualified`` at each step, a few disqualified leads are recycled back to
  ``lead``; outbound leads skip ``mql``. Sales cycle and win rate depend on the segment; wins carry the final
  amount (ACV) 75 % of the time, losses a reason 85 % of the time. Customers also get expansion opportunities
  (no lead).
* **Billing.** A win books a subscription (``mrr``, or ``amount`` + ``interval`` week/month/quarter/year with
  ``interval_count``; rarely both, ``mrr`` winning) or expands an existing one. Subscriptions renew at the end of
  each period (12 % with a price change) or are canceled (churn probability per segment); mid-term
  ``subscription.updated`` expand (two thirds) or contract them; customers add add-on subscriptions (rarely first seen
  as an update of an unknown subscription); a third of churned accounts come back (reactivation, sometimes
  restarting the same ``subscription_id``). 15 % of the accounts bill in a configured foreign currency.
* **Product.** ``product.usage`` (by far the most frequent type) from customers and trials, weighted by segment,
  with a business-hours / weekday profile; customers' new users sign up and activate.
* **Marketing.** One ``marketing.spend`` per spend channel per day (``paid_search`` and ``outbound`` split by
  segment, ``events`` sometimes in a foreign currency, the rest without segment), weekend budgets lower.

Opportunity amounts are annual contract values (a won deal books MRR = amount / 12). ``occurred_at`` is mostly
RFC 3339 with ``Z`` (some with a fraction), 10 % with an offset (+02:00, -05:00, +05:30) and a fraction, 8 % epoch
milliseconds. Optional fields are sometimes ``null`` (and a few segment-less accounts send ``"segment": ""``),
which SPEC §1 treats as absent; ``currency: "USD"`` is sometimes explicit.

Volume: without ``events``, usage is ≈ 3 events per day per weighted active account (≈ 120k events for the
default config). With ``events=N``, the usage volume adapts so that the N events span the whole time range.
"""
