"""Stripe webhook bodies → canonical SPEC §1 `subscription.*` events.

A Stripe webhook body is one Event object (`{"id": "evt_…", "type": …, "created": …, "data": {"object": …}}`).

Mapping
-------
- `customer.subscription.created` → `subscription.started`; `customer.subscription.updated`, `.paused`,
  `.resumed` → `subscription.updated`; `customer.subscription.deleted` → `subscription.canceled`.
- `invoice.paid` with `billing_reason == "subscription_cycle"` → `subscription.renewed` (no price: the
  subscription events already carry MRR). Other billing reasons → `[]`: creation and plan changes are covered by
  the subscription events, and counting them would inflate `renewal_rate`. `invoice.payment_succeeded` is not
  used: it fires for the same invoices, with other event ids, so mapping both would count each renewal twice.
- `customer.discount.*` and `coupon.*` map to `[]` but are remembered (see "Discounts").
- Every other type → `[]`.

Common fields: `event_id` is the Stripe event id, so Stripe's retried deliveries are SPEC duplicates;
`occurred_at` is the event's `created` (epoch seconds) × 1000; `account_id` is the subscription's or invoice's
`customer` (an id, or an expanded Customer's `id`); `segment` is `metadata.segment` of the subscription, else of
an expanded customer (for invoices: the subscription metadata snapshot Stripe copies onto the invoice).

MRR
---
Subscription events always carry `mrr` (never `amount` + `interval`) so the normalisation is decided here, once:
MRR = Σ over items of price × quantity, per month, minus forever discounts. In numbers:

- Stripe amounts are integer minor units (`unit_amount`, or the more precise `unit_amount_decimal` string, which
  wins). Major = minor ÷ 10^e with e = 0 for Stripe's zero-decimal currencies, 3 for its three-decimal ones, else
  2. ISK, HUF and TWD stay two-decimal in Stripe's API (Stripe's documented special cases), so they use e = 2.
- Per month, by `recurring.interval` and `interval_count` n: month ÷ n; year ÷ 12n; week × 52/12 ÷ n (SPEC: a
  week is 12/52 month); day × 365/12 ÷ n (a 365-day year of 12 equal months; leap years are ignored so that the
  same price always gives the same MRR).
- Tiered prices use their `tiers` (volume or graduated) when the webhook carries them expanded; otherwise the
  event is `Unmappable` (guessing a price would be silently wrong). `transform_quantity` is applied. Metered items
  (`usage_type == "metered"`) count 0: their amount is usage billed in arrears, not a run-rate.
- All arithmetic is exact (`fractions.Fraction`); the result is rounded once, half-even, to 1e-6 major units and
  emitted as a JSON number.

Which statuses count. MRR is what the customer is committed to pay each month now:
`active` and `past_due` count (past_due is a failed renewal that Stripe is still retrying: zeroing it would book a
churn and a reactivation for every card that is retried successfully). `trialing` (not paying yet: a trial that
converts is an update from 0 to the price, i.e. a `new` movement), `incomplete` (first payment never made),
`incomplete_expired`, `paused` (trial ended without a payment method), `unpaid` (retries exhausted: involuntary
churn), `canceled` give 0. An active subscription with `pause_collection` set also gives 0: its invoices are not
being collected. An unknown status is `Unmappable` rather than 0, so a new Stripe status cannot pass for churn.

Discounts
---------
Only coupons with `duration == "forever"` are applied (`percent_off` and `amount_off`). `once` and `repeating`
are not: MRR is the recurring run-rate, and a discount that expires would otherwise book a fake contraction now
and a fake expansion when it ends. Item discounts (`items.data[].discounts`) apply to their item first, then the
subscription's discounts to the total, each in listed order on what remains, never below 0. An `amount_off` is
per invoice, so it is normalised by the billing interval like a price (for a subscription discount, by the
shortest item interval). A customer-wide discount is not listed on the subscription and is not applied.

Both API shapes are read: before 2025-03-31 ("basil") a subscription has the legacy `discount` object (and
items may carry a legacy `plan`), and periods sit on the subscription; from basil on `discount` is gone,
`discounts` is a list of Discount ids or expanded Discount objects (coupon under `coupon`; from 2025-09-30
("clover") under `source.coupon`, which is an id unless expanded, and nullable), and periods sit on the items
(they do not affect MRR). Webhooks do not expand `discounts`, so an id is resolved
from the last `customer.discount.created`/`.updated` event seen with that id (and a coupon id from the last
`coupon.created`/`.updated`); this state is rebuilt by replaying the raw topic, as revpulse.connectors.base requires. An
id that is still unknown, or a discount with no coupon (`source.coupon` null), is left out: the subscription's MRR
is then its undiscounted price. That overstates MRR
for a discounted subscription whose discount event was never seen, but dead-lettering would drop the whole
subscription (its MRR, and later its churn), which is worse. A discount or coupon event whose coupon is malformed
(a field of the wrong type, a forever coupon with neither `percent_off` nor `amount_off`) is `Unmappable` and not
remembered, so the last good one with that id stays in force. Coupon product restrictions (`applies_to`) are not
modelled.

Hostile values. Every field is read with its type checked (`_At`), and anything else is `Unmappable` with the
field's path: `created` must be epoch seconds before the year 10000 (its milliseconds must stay a JSON integer),
and a `*_decimal` string may have at most 20 integer and 20 fractional digits (it is read exactly, and
"1e999999999" would be a billion-digit integer).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final

from revpulse.connectors.base import CanonicalEvent, Unmappable, preview

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
ZERO_DECIMAL: Final = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL: Final = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

# One billing period's amount × this = its amount per month, before ÷ interval_count.
PER_MONTH: Final = {"day": Fraction(365, 12), "week": Fraction(52, 12), "month": Fraction(1), "year": Fraction(1, 12)}

COUNTED_STATUSES: Final = frozenset({"active", "past_due"})
UNCOUNTED_STATUSES: Final = frozenset({"trialing", "incomplete", "incomplete_expired", "paused", "unpaid", "canceled"})

SUBSCRIPTION_TYPES: Final = {
    "customer.subscription.created": "subscription.started",
    "customer.subscription.updated": "subscription.updated",
    "customer.subscription.paused": "subscription.updated",
    "customer.subscription.resumed": "subscription.updated",
    "customer.subscription.deleted": "subscription.canceled",
}
DISCOUNT_TYPES: Final = frozenset({"customer.discount.created", "customer.discount.updated"})
COUPON_TYPES: Final = frozenset({"coupon.created", "coupon.updated"})

MRR_QUANTUM: Final = 10**6  # emitted MRR is rounded to 1e-6 major units
MAX_CREATED: Final = 253402300799  # 9999-12-31T23:59:59Z in epoch seconds: the last time RFC 3339 can write
# A `*_decimal` string is read exactly, so its size is bounded first: "1e999999999" would be a billion-digit int.
MAX_DECIMAL_DIGITS: Final = 20  # integer digits (Stripe's own limit is 12)
MAX_DECIMAL_PLACES: Final = 20  # fractional digits (Stripe's own limit is 12)


class _At:
    """A JSON object and its path in the event, for typed reads whose errors say exactly what is wrong."""

    def __init__(self, obj: dict[str, Any], path: str) -> None:
        self.obj = obj
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def bad(self, key: str, why: str) -> Unmappable:
        return Unmappable(f"{self.where(key)} {why}; got {preview(self.obj.get(key))}")

    def get(self, key: str) -> Any:
        return self.obj.get(key)

    def opt_obj(self, key: str) -> _At | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.bad(key, "must be an object")
        return _At(value, self.where(key))

    def obj_(self, key: str) -> _At:
        found = self.opt_obj(key)
        if found is None:
            raise self.bad(key, "is required")
        return found

    def opt_str(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.bad(key, "must be a non-empty string")
        return value

    def str_(self, key: str) -> str:
        value = self.opt_str(key)
        if value is None:
            raise self.bad(key, "is required")
        return value

    def opt_int(self, key: str, *, minimum: int = 0) -> int | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.bad(key, f"must be an integer >= {minimum}")
        return value

    def int_(self, key: str, *, minimum: int = 0) -> int:
        value = self.opt_int(key, minimum=minimum)
        if value is None:
            raise self.bad(key, "is required")
        return value

    def opt_list(self, key: str) -> list[Any] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.bad(key, "must be a list")
        return value

    def opt_decimal(self, key: str) -> Fraction | None:
        """A `*_decimal` field: Stripe sends these as decimal strings (minor units with fractions)."""
        value = self.obj.get(key)
        if value is None:
            return None
        try:
            number = Decimal(value) if isinstance(value, str) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or number < 0:
            raise self.bad(key, "must be a decimal string >= 0")
        if number.is_zero():
            return Fraction(0)
        if number.adjusted() >= MAX_DECIMAL_DIGITS or number.as_tuple().exponent < -MAX_DECIMAL_PLACES:
            raise self.bad(
                key, f"must have at most {MAX_DECIMAL_DIGITS} integer and {MAX_DECIMAL_PLACES} fractional digits"
            )
        return Fraction(number)

    def opt_number(self, key: str) -> Fraction | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            raise self.bad(key, "must be a finite number >= 0")
        # Via str: a JSON 12.5 is 12.5, not the binary double nearest to it.
        return Fraction(Decimal(str(value)))

    def id_of(self, key: str) -> str | None:
        """An expandable reference: an id string, or the expanded object's `id`."""
        value = self.obj.get(key)
        if isinstance(value, dict):
            return _At(value, self.where(key)).str_("id")
        return self.opt_str(key)

    def items(self, key: str) -> Iterable[_At]:
        """The objects of a list field, each with its indexed path."""
        for index, value in enumerate(self.opt_list(key) or []):
            if not isinstance(value, dict):
                raise Unmappable(f"{self.where(key)}[{index}] must be an object; got {preview(value)}")
            yield _At(value, f"{self.where(key)}[{index}]")


class StripeMapper:
    """Maps Stripe Event objects; keeps the discounts and coupons seen, to resolve the ids webhooks carry."""

    source = "stripe"

    def __init__(self) -> None:
        self._discounts: dict[str, dict[str, Any]] = {}  # discount id → Discount object
        self._coupons: dict[str, dict[str, Any]] = {}  # coupon id → Coupon object

    def elements(self, body: Any) -> list[Any]:
        return [body]

    def map(self, element: Any) -> list[CanonicalEvent]:
        if not isinstance(element, dict):
            raise Unmappable(f"a Stripe event must be a JSON object; got {type(element).__name__}")
        event = _At(element, "")
        event.str_("id")  # every event needs one; the handled ones use it as event_id
        kind = event.str_("type")
        if kind in SUBSCRIPTION_TYPES:
            return [self._subscription_event(event, SUBSCRIPTION_TYPES[kind])]
        if kind == "invoice.paid":
            return _renewal(event)
        if kind in DISCOUNT_TYPES:
            self._remember(self._discounts, event)
        elif kind in COUPON_TYPES:
            self._remember(self._coupons, event)
        elif kind == "customer.discount.deleted":
            self._discounts.pop(_payload(event).str_("id"), None)
        return []

    def _remember(self, store: dict[str, dict[str, Any]], event: _At) -> None:
        """Keep a Discount or Coupon for the subscriptions that name it by id, once it is known to be usable.

        A malformed one is `Unmappable` here, and the last good one with its id stays: remembering it would make
        every later subscription event that names it unmappable instead.
        """
        payload = _payload(event)
        key = payload.str_("id")
        if store is self._discounts:
            _check_discount(payload)
        else:
            _check_coupon(payload)
        store[key] = payload.obj

    def _subscription_event(self, event: _At, kind: str) -> CanonicalEvent:
        sub = _payload(event)
        canonical = _common(event, kind, sub.str_("id"), _account(sub), _segment(sub))
        if kind != "subscription.canceled":
            mrr, currency = self._mrr(sub)
            canonical["mrr"] = mrr
            canonical["currency"] = currency
        return canonical

    def _mrr(self, sub: _At) -> tuple[float, str]:
        """The subscription's MRR in major units of its (upper-case) currency."""
        status = sub.str_("status")
        if status not in COUNTED_STATUSES | UNCOUNTED_STATUSES:
            raise sub.bad("status", "is not a subscription status RevPulse knows")
        items_list = sub.obj_("items")
        if items_list.get("has_more") is True:
            raise items_list.bad("has_more", "is true: the webhook lists only some items, so MRR cannot be summed")
        items = list(items_list.items("data"))
        currency = _currency(sub, items)
        total = Fraction(0)
        rates: list[Fraction] = []
        for item in items:
            amount, rate = self._item_mrr(item, currency)
            total += amount
            rates.append(rate)
        # A subscription discount is per invoice: the shortest interval invoices most often.
        total = self._discounted(total, self._discount_list(sub), currency, max(rates, default=Fraction(1)))
        counted = status in COUNTED_STATUSES and sub.get("pause_collection") is None
        return (_round(total) if counted else 0.0), currency

    def _item_mrr(self, item: _At, currency: str) -> tuple[Fraction, Fraction]:
        """One item's monthly amount (after its own forever discounts) and its per-invoice → per-month rate."""
        price = item.opt_obj("price") or item.opt_obj("plan")
        if price is None:
            raise item.bad("price", "is required (or a legacy plan)")
        # A Price keeps interval fields under `recurring`; a legacy Plan has them on itself.
        recurring = price if price.get("object") == "plan" else price.obj_("recurring")
        interval = recurring.str_("interval")
        if interval not in PER_MONTH:
            raise recurring.bad("interval", f"must be one of {', '.join(PER_MONTH)}")
        rate = PER_MONTH[interval] / (recurring.opt_int("interval_count", minimum=1) or 1)
        price_currency = price.str_("currency").upper()
        if price_currency != currency:
            raise price.bad("currency", f"differs from the subscription currency {currency}")
        if recurring.get("usage_type") == "metered":
            return Fraction(0), rate
        quantity = _transformed(price, item.opt_int("quantity"))
        per_period = _major(_period_minor(price, quantity), currency)
        return self._discounted(per_period * rate, self._discount_list(item), currency, rate), rate

    def _discount_list(self, owner: _At) -> list[_At]:
        """The coupons of the owner's discounts: `discounts` (ids or objects) plus a legacy `discount` object."""
        legacy = owner.opt_obj("discount")
        found: list[_At] = []
        seen: set[str | None] = set()
        for index, entry in enumerate(owner.opt_list("discounts") or []):
            path = f"{owner.where('discounts')}[{index}]"
            discount = self._discount(entry, legacy, path)
            if discount is not None:
                seen.add(discount.opt_str("id"))
                found.append(discount)
        if legacy is not None and (legacy.opt_str("id") is None or legacy.opt_str("id") not in seen):
            found.append(legacy)
        return [coupon for coupon in (self._coupon(discount) for discount in found) if coupon is not None]

    def _discount(self, entry: Any, legacy: _At | None, path: str) -> _At | None:
        if isinstance(entry, dict):
            return _At(entry, path)
        if not isinstance(entry, str) or not entry:
            raise Unmappable(f"{path} must be a discount id or a Discount object; got {preview(entry)}")
        if legacy is not None and legacy.get("id") == entry:
            return legacy
        known = self._discounts.get(entry)
        return None if known is None else _At(known, f"{path} (from customer.discount event)")

    def _coupon(self, discount: _At) -> _At | None:
        """A discount's coupon: `coupon` (to basil), or `source.coupon` (clover on), an expanded Coupon or an id,
        resolved if seen. None when it cannot be resolved (an unknown id, or none: `source.coupon` is nullable):
        the discount is then left out, and the price undiscounted (module docstring)."""
        holder = _coupon_holder(discount)
        coupon = holder.get("coupon")
        if coupon is None:
            return None
        if isinstance(coupon, str):
            known = self._coupons.get(coupon)
            return None if known is None else _At(known, f"{holder.where('coupon')} (from coupon event)")
        return holder.obj_("coupon")

    def _discounted(self, amount: Fraction, coupons: list[_At], currency: str, rate: Fraction) -> Fraction:
        for coupon in coupons:
            if coupon.get("duration") != "forever":
                continue  # once / repeating: not part of the recurring run-rate (module docstring)
            percent = coupon.opt_number("percent_off")
            if percent is not None:
                amount *= 1 - min(percent, Fraction(100)) / 100
            else:
                amount -= _major(_amount_off(coupon, currency), currency) * rate
            amount = max(amount, Fraction(0))
        return amount


def _payload(event: _At) -> _At:
    return event.obj_("data").obj_("object")


def _common(event: _At, kind: str, subscription_id: str, account_id: str, segment: str | None) -> CanonicalEvent:
    created = event.int_("created")
    if created > MAX_CREATED:
        raise event.bad("created", "must be epoch seconds before the year 10000")
    canonical: CanonicalEvent = {
        "event_id": event.str_("id"),
        "type": kind,
        "occurred_at": created * 1000,
        "account_id": account_id,
        "subscription_id": subscription_id,
    }
    if segment is not None:
        canonical["segment"] = segment
    return canonical


def _account(owner: _At) -> str:
    account = owner.id_of("customer")
    if account is None:
        raise owner.bad("customer", "is required (the account)")
    return account


def _metadata_segment(owner: _At | None) -> str | None:
    metadata = None if owner is None else owner.get("metadata")
    segment = metadata.get("segment") if isinstance(metadata, dict) else None
    return segment if isinstance(segment, str) and segment else None


def _segment(sub: _At) -> str | None:
    customer = sub.get("customer")
    expanded = _At(customer, sub.where("customer")) if isinstance(customer, dict) else None
    return _metadata_segment(sub) or _metadata_segment(expanded)


def _currency(sub: _At, items: list[_At]) -> str:
    """The subscription's currency, upper-cased; very old subscriptions carry it only on their prices."""
    currency = sub.opt_str("currency")
    if currency is None:
        for item in items:
            price = item.opt_obj("price") or item.opt_obj("plan")
            if price is not None and isinstance(price.get("currency"), str):
                currency = price.get("currency")
                break
    if currency is None or len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise sub.bad("currency", "must be a three-letter ISO 4217 code (on the subscription or its prices)")
    return currency.upper()


def _major(minor: Fraction, currency: str) -> Fraction:
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    return minor / 10**exponent


def _round(amount: Fraction) -> float:
    # round() of a Fraction is exact and half-even; int / int is then the correctly rounded double.
    try:
        return round(amount * MRR_QUANTUM) / MRR_QUANTUM
    except OverflowError:
        raise Unmappable("the subscription's MRR is too large to be a JSON number") from None


def _transformed(price: _At, quantity: int | None) -> int:
    """The billed quantity: `transform_quantity` (Price) or `transform_usage` (Plan) divides and rounds it."""
    quantity = 1 if quantity is None else quantity
    transform = price.opt_obj("transform_quantity") or price.opt_obj("transform_usage")
    if transform is None:
        return quantity
    divide_by = transform.int_("divide_by", minimum=1)
    # Integer division: exact for any quantity (a float quotient rounds beyond 2**53).
    return -(-quantity // divide_by) if transform.get("round") == "up" else quantity // divide_by


def _money(owner: _At, name: str) -> Fraction | None:
    """A minor-unit amount: the `<name>_decimal` string when given (more precise), else the integer."""
    exact = owner.opt_decimal(f"{name}_decimal")
    if exact is not None:
        return exact
    whole = owner.opt_int(name)
    return None if whole is None else Fraction(whole)


def _period_minor(price: _At, quantity: int) -> Fraction:
    """What one billing period of `quantity` units costs, in minor units."""
    if price.get("billing_scheme") == "tiered":
        return _tiered(price, quantity)
    unit = _money(price, "unit_amount") if price.get("object") != "plan" else _money(price, "amount")
    if unit is None:
        name = "amount" if price.get("object") == "plan" else "unit_amount"
        raise price.bad(name, "is required for a per-unit price")
    return unit * quantity


def _tiered(price: _At, quantity: int) -> Fraction:
    tiers = list(price.items("tiers"))
    if not tiers:
        raise price.bad("tiers", "is required for a tiered price (expand items.data.price.tiers)")
    mode = price.get("tiers_mode")
    if mode == "volume":
        tier = next((t for t in tiers if t.get("up_to") is None or quantity <= t.int_("up_to")), tiers[-1])
        return (_money(tier, "unit_amount") or 0) * quantity + (_money(tier, "flat_amount") or 0)
    if mode != "graduated":
        raise price.bad("tiers_mode", "must be volume or graduated")
    total, below = Fraction(0), 0
    for tier in tiers:
        upper = tier.opt_int("up_to")
        units = (quantity if upper is None else min(quantity, upper)) - below
        if units <= 0:
            break
        total += (_money(tier, "unit_amount") or 0) * units + (_money(tier, "flat_amount") or 0)
        below += units
    return total


def _check_coupon(coupon: _At) -> None:
    """`Unmappable` unless a Coupon holds what `_discounted` / `_amount_off` read, with the right types."""
    duration = coupon.opt_str("duration")
    percent = coupon.opt_number("percent_off")
    amount_off = coupon.opt_int("amount_off")
    coupon.opt_str("currency")
    options = coupon.opt_obj("currency_options")
    for code in [] if options is None else list(options.obj):
        options.obj_(code).opt_int("amount_off")
    if duration == "forever" and percent is None and amount_off is None and options is None:
        raise coupon.bad("percent_off", "or amount_off is required for a coupon")


def _coupon_holder(discount: _At) -> _At:
    """Where a Discount keeps its coupon: on itself (`coupon`, to basil) or under `source` (clover on)."""
    has_source = discount.get("coupon") is None and discount.get("source") is not None
    return discount.obj_("source") if has_source else discount


def _check_discount(discount: _At) -> None:
    """`Unmappable` unless a Discount's coupon, if any, is an id or a well-formed Coupon object (under `coupon` or
    `source.coupon`). One without a coupon is kept: like an unknown id, it leaves the price undiscounted."""
    holder = _coupon_holder(discount)
    coupon = holder.get("coupon")
    if coupon is None or (isinstance(coupon, str) and coupon):
        return
    _check_coupon(holder.obj_("coupon"))


def _amount_off(coupon: _At, currency: str) -> Fraction:
    """A coupon's amount off per invoice in the subscription currency (multi-currency coupons: currency_options)."""
    if (coupon.opt_str("currency") or "").upper() == currency:
        return Fraction(coupon.int_("amount_off"))
    options = coupon.opt_obj("currency_options")
    option = None if options is None else options.opt_obj(currency.lower())
    if option is None:
        raise coupon.bad("currency", f"is not {currency} and currency_options has no {currency.lower()}")
    return Fraction(option.int_("amount_off"))


def _renewal(event: _At) -> list[CanonicalEvent]:
    invoice = _payload(event)
    if invoice.get("billing_reason") != "subscription_cycle":
        return []
    subscription_id, details = _invoice_subscription(invoice)
    segment = _metadata_segment(details)
    return [_common(event, "subscription.renewed", subscription_id, _account(invoice), segment)]


def _invoice_subscription(invoice: _At) -> tuple[str, _At | None]:
    """The invoice's subscription id, and the subscription details (a metadata snapshot) when present."""
    parent = invoice.opt_obj("parent")
    details = None if parent is None else parent.opt_obj("subscription_details")
    legacy_details = invoice.opt_obj("subscription_details")
    candidates = [invoice.id_of("subscription"), None if details is None else details.id_of("subscription")]
    lines = invoice.opt_obj("lines")
    for line in [] if lines is None else lines.items("data"):
        line_parent = line.opt_obj("parent")
        item_details = None if line_parent is None else line_parent.opt_obj("subscription_item_details")
        candidates.append(line.id_of("subscription"))
        candidates.append(None if item_details is None else item_details.opt_str("subscription"))
    found = next((candidate for candidate in candidates if candidate is not None), None)
    if found is None:
        raise Unmappable(
            "a subscription_cycle invoice names no subscription (looked at data.object.subscription, "
            "parent.subscription_details.subscription and the lines' subscription fields)"
        )
    return found, details or legacy_details
