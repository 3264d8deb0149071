"""Shared helpers for the marketplace load scenarios.

Every request goes through one of the helpers below, which check the HTTP
contract (`docs/api.md` at the repository root) and mark the request as
failed in locust's stats when it is not honoured:

* writes (`PUT /user`, `PUT /book`, `POST /offer`, `POST /order`) must answer
  `200` with an empty body. Anything else is a failure, `503` included: the
  load test is there to find out when the API starts refusing commands. The
  `Retry-After` header of a refused write is recorded (in the failure message
  and in a summary printed at the end) and honoured before the flow goes on.
* reads must answer `200` with `application/json` and the documented shape
  (book, offer, order), or the `404` problem+json the caller expected.
* writes are applied asynchronously, so a flow that wants to see its own
  write polls for it (`poll`): a bounded number of requests with short,
  growing waits, named `... (poll)` so they do not mix with the latency of
  the plain reads, plus one `ASYNC` row per outcome whose time is how long
  the write took to become visible (not an HTTP request).

The flows (`sign_up`, `browse_books`, `search_books`, `create_offer_flow`,
`buy_flow`) are here too so that every scenario runs exactly the same steps.

Searches (`GET /books?q=..`) use the words `marketplace seed` writes titles
and authors with, read from `marketplace/src/seed/words.rs` (or the file
`SEARCH_WORDS_FILE` names): a surname, a surname and a title noun, or one
title word, as someone looking for a book types them; and words of the
books this process has seen, so a catalogue that was not seeded is
searched too.

Signing in: every request carries `Authorization: Bearer <token>` of the
simulated user acting (`sign_in`): an HS256 JWT signed with
`MARKETPLACE_AUTH_SECRET` (default: the development secret of
docker-compose.yml), `sub` the user's id, `iss` `AUTH_ISSUER` and `aud`
`AUTH_AUDIENCE` (both `marketplace`, the API's defaults), valid
`AUTH_TOKEN_TTL` seconds (3600). A user who signs up signs in as itself;
a buyer signs in again before ordering (a flow may have put a book on sale
as another, new user first). The API must verify tokens with the same
secret (the Makefile's `serve` target starts it so).

Tunables (environment variables): `THINK_MIN`/`THINK_MAX` seconds between
the steps of a flow (default 0.2..1.0), `POLL_MAX` polls (default 30),
`POLL_WAIT_MAX` longest wait between polls in seconds (default 1.0),
`PAGE_SIZE` for `GET /books` (default 20), `RETRY_AFTER_CAP` longest honoured
`Retry-After` in seconds (default 5), `SEARCH_WORDS_FILE` the seed's
vocabulary (default: `marketplace/src/seed/words.rs` of this repository).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from urllib.parse import urlencode
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Optional

import gevent
import jwt
from faker import Faker
from locust import events
from locust.exception import RescheduleTask

LOG = logging.getLogger("marketplace")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


THINK_MIN = _env_float("THINK_MIN", 0.2)
THINK_MAX = _env_float("THINK_MAX", 1.0)
POLL_MAX = int(os.environ.get("POLL_MAX", 30))
POLL_WAIT_FIRST = 0.1
POLL_WAIT_MAX = _env_float("POLL_WAIT_MAX", 1.0)
PAGE_SIZE = int(os.environ.get("PAGE_SIZE", 20))
RETRY_AFTER_CAP = _env_float("RETRY_AFTER_CAP", 5.0)

# The development secret of docker-compose.yml; set MARKETPLACE_AUTH_SECRET to
# the API's own.
DEVELOPMENT_SECRET = "marketplace-development-secret-do-not-use-in-production"
AUTH_SECRET = os.environ.get("MARKETPLACE_AUTH_SECRET") or DEVELOPMENT_SECRET
AUTH_ISSUER = os.environ.get("AUTH_ISSUER", "marketplace")
AUTH_AUDIENCE = os.environ.get("AUTH_AUDIENCE", "marketplace")
AUTH_TOKEN_TTL = int(os.environ.get("AUTH_TOKEN_TTL", 3600))

# Several locales, so names and titles carry accents and non-Latin scripts:
# the API counts characters, not bytes.
FAKE = Faker(["en_US", "fr_FR", "de_DE", "es_ES", "ja_JP"])

BOOK_KEYS = {"id", "title", "author", "stock", "price", "offerId"}
OFFER_KEYS = {"id", "bookId", "sellerId", "price", "stock"}
OFFER_OPTIONAL_KEYS = {"sellerName"}
ORDER_KEYS = {"id", "userId", "status", "reason", "items", "total", "createdAt"}
ORDER_ITEM_KEYS = {"offerId", "quantity", "unitPrice", "total"}
ORDER_STATUSES = {"pending", "confirmed", "rejected"}
SELLER_OFFER_KEYS = {"id", "bookId", "title", "sellerId", "sellerName", "price", "stock", "createdAt"}
LIST_PAGE_KEYS = {"items", "next"}

# Retry-After values of refused (503) requests, per endpoint; printed at the end.
RETRY_AFTER: Counter = Counter()


class ContractError(Exception):
    """A response that does not honour the HTTP contract."""


# --------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def _clip(text: str, limit: int) -> str:
    text = text.strip()[:limit].strip()
    return text or "x"


def user_name() -> str:
    """1..50 characters."""
    return _clip(FAKE.name(), 50)


def book_title() -> str:
    """1..255 characters."""
    return _clip(FAKE.catch_phrase() if random.random() < 0.5 else FAKE.sentence(nb_words=6).rstrip("."), 255)


def book_author() -> str:
    """1..255 characters."""
    return _clip(FAKE.name(), 255)


def price() -> float:
    """A price as the original clients send it: Faker's
    `pyfloat(min_value=1.0, max_value=99.0)`, many decimals (`45.31927383`)."""
    return FAKE.pyfloat(min_value=1.0, max_value=99.0)


def offer_stock() -> int:
    """A stock as the original clients send it: Faker's `pyint(min_value=1)`, 1..9999."""
    return FAKE.pyint(min_value=1)


def stored_price(sent: float) -> float:
    """The price the API stores and answers: `sent` rounded half up to cents,
    from the shortest decimal that denotes it (what `repr` writes)."""
    return float(Decimal(repr(sent)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def think() -> None:
    """The user reading the screen before the next step."""
    if THINK_MAX > 0:
        gevent.sleep(random.uniform(THINK_MIN, THINK_MAX))


# --------------------------------------------------------------------------
# The words people search for
# --------------------------------------------------------------------------

SEARCH_WORDS_FILE = os.environ.get("SEARCH_WORDS_FILE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "marketplace", "src", "seed", "words.rs"
)


def load_vocabulary(path: str) -> dict:
    """The word lists of the seed (`pub const NAME: [&str; N] = ["..", ..];`),
    by name; empty when the file is not there (e.g. a copy of this folder
    alone): searches then use the words of the books seen."""
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except OSError:
        LOG.warning("no seed vocabulary at %s: searching the words of the books seen only", path)
        return {}
    lists = {}
    for name, body in re.findall(r"pub const (\w+): \[&str; \d+\] = \[(.*?)\];", text, re.S):
        lists[name] = re.findall(r'"([^"]+)"', body)
    return lists


VOCABULARY = load_vocabulary(SEARCH_WORDS_FILE)


# --------------------------------------------------------------------------
# What the users of this process have seen of the catalogue
# --------------------------------------------------------------------------


@dataclass
class Catalogue:
    """Books seen by this locust process, so users can pick existing ids."""

    pages: int = 1  # highest page known to hold books
    books: deque = field(default_factory=lambda: deque(maxlen=5_000))
    with_offers: deque = field(default_factory=lambda: deque(maxlen=5_000))
    # Authors' last names and title words of the books seen, to search for.
    surnames: deque = field(default_factory=lambda: deque(maxlen=2_000))
    title_words: deque = field(default_factory=lambda: deque(maxlen=2_000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw_page(self, page: int, books: list) -> None:
        with self.lock:
            if books:
                self.pages = max(self.pages, page + (1 if len(books) == PAGE_SIZE else 0))
        self.saw_books(books)

    def saw_books(self, books: list) -> None:
        with self.lock:
            for book in books:
                self.books.append(book["id"])
                if book["offerId"] is not None:
                    self.with_offers.append(book["id"])
                words = _words(book["author"])
                if words:
                    self.surnames.append(words[-1])
                self.title_words.extend(w for w in _words(book["title"]) if len(w) > 3)

    def add_offered(self, book_id: str) -> None:
        with self.lock:
            self.books.append(book_id)
            self.with_offers.append(book_id)

    def random_page(self) -> int:
        """Mostly the first pages, as people browse, sometimes anywhere."""
        if random.random() < 0.7:
            return random.randint(1, min(self.pages, 5))
        return random.randint(1, self.pages)

    def random_book(self) -> Optional[str]:
        return random.choice(self.books) if self.books else None

    def random_offered_book(self) -> Optional[str]:
        return random.choice(self.with_offers) if self.with_offers else None

    def search_text(self) -> Optional[str]:
        """What a user types to find a book: a surname (half the time), a
        surname and a title noun, or one title word; from the seed's
        vocabulary or, half the time or without it, from the books seen."""
        with self.lock:
            seen_surnames, seen_words = list(self.surnames), list(self.title_words)
        surnames, nouns = VOCABULARY.get("SURNAMES", []), VOCABULARY.get("NOUNS", [])
        title_words = nouns + VOCABULARY.get("PLACES", [])
        if not surnames or (seen_surnames and random.random() < 0.5):
            surnames, nouns, title_words = seen_surnames, seen_words, seen_words
        if not surnames:
            return None
        draw = random.random()
        if draw < 0.5 or not nouns:
            return random.choice(surnames)
        if draw < 0.8:
            return f"{random.choice(surnames)} {random.choice(nouns)}"
        return random.choice(title_words)


def _words(text: str) -> list:
    """The words of a title or a name, as a search splits them."""
    return re.findall(r"\w+", text)


CATALOGUE = Catalogue()


# --------------------------------------------------------------------------
# Contract checks
# --------------------------------------------------------------------------


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_two_decimals(value: float) -> bool:
    return abs(round(value * 100) - value * 100) < 1e-6


def check_keys(what: str, obj: Any, required: set, optional: set = frozenset()) -> None:
    if not isinstance(obj, dict):
        raise ContractError(f"{what} is not an object")
    missing = required - obj.keys()
    extra = obj.keys() - required - optional
    if missing:
        raise ContractError(f"{what} lacks {sorted(missing)}")
    if extra:
        raise ContractError(f"{what} has unexpected {sorted(extra)}")


def check_book(book: Any) -> None:
    check_keys("book", book, BOOK_KEYS)
    if not _is_uuid(book["id"]):
        raise ContractError("book.id is not a uuid")
    for key in ("title", "author"):
        if not isinstance(book[key], str) or not 1 <= len(book[key]) <= 255:
            raise ContractError(f"book.{key} is not a string of 1..255")
    if not _is_int(book["stock"]) or book["stock"] < 0:
        raise ContractError("book.stock is not an integer >= 0")
    if not _is_number(book["price"]) or book["price"] < 0 or not _has_two_decimals(book["price"]):
        raise ContractError("book.price is not a number >= 0 with 2 decimals")
    if book["offerId"] is None:
        if book["stock"] != 0 or book["price"] != 0:
            raise ContractError("book without offerId has stock or price")
    elif not _is_uuid(book["offerId"]):
        raise ContractError("book.offerId is neither null nor a uuid")
    elif book["stock"] < 1 or book["price"] <= 0:
        raise ContractError("book.offerId is set but stock < 1 or price <= 0")


def check_offer(offer: Any, book_id: str) -> None:
    check_keys("offer", offer, OFFER_KEYS, OFFER_OPTIONAL_KEYS)
    for key in ("id", "bookId", "sellerId"):
        if not _is_uuid(offer[key]):
            raise ContractError(f"offer.{key} is not a uuid")
    if offer["bookId"] != book_id:
        raise ContractError("offer.bookId is not the book asked for")
    if not _is_number(offer["price"]) or offer["price"] <= 0 or not _has_two_decimals(offer["price"]):
        raise ContractError("offer.price is not a number > 0 with 2 decimals")
    if not _is_int(offer["stock"]) or offer["stock"] < 0:
        raise ContractError("offer.stock is not an integer >= 0")
    if "sellerName" in offer and offer["sellerName"] is not None and not isinstance(offer["sellerName"], str):
        raise ContractError("offer.sellerName is not a string")


def check_books_page(books: Any, page_size: int) -> None:
    if not isinstance(books, list):
        raise ContractError("books is not an array")
    if len(books) > page_size:
        raise ContractError(f"{len(books)} books on a page of {page_size}")
    for book in books:
        check_book(book)


def check_list_page(page: Any, limit: int, check_item: Callable[[Any], None]) -> list:
    """A page of a user's list: `{"items": [...], "next": cursor or null}`."""
    check_keys("page", page, LIST_PAGE_KEYS)
    items, cursor = page["items"], page["next"]
    if not isinstance(items, list) or len(items) > limit:
        raise ContractError(f"page.items is not an array of at most {limit}")
    if cursor is not None and not (isinstance(cursor, str) and cursor):
        raise ContractError("page.next is neither null nor a cursor")
    for item in items:
        check_item(item)
    created = [_timestamp(item["createdAt"]) for item in items]
    if created != sorted(created, reverse=True):
        raise ContractError("page.items are not newest first")
    return items


def check_own_order(order: Any, user_id: str) -> None:
    """An order of `user_id`'s list of orders."""
    if not isinstance(order, dict) or not isinstance(order.get("id"), str):
        raise ContractError("order is not an object with an id")
    check_order(order, order["id"])
    if order["userId"] != user_id:
        raise ContractError("an order of another user in the user's orders")
    _timestamp(order["createdAt"])


def _timestamp(value: Any) -> datetime:
    """An RFC 3339 time (`2026-11-30T17:02:11.514Z`)."""
    if not isinstance(value, str):
        raise ContractError("createdAt is not a string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ContractError(f"createdAt {value!r} is not an RFC 3339 time") from None


def check_seller_offer(offer: Any, seller_id: str) -> None:
    check_keys("seller offer", offer, SELLER_OFFER_KEYS)
    for key in ("id", "bookId", "sellerId"):
        if not _is_uuid(offer[key]):
            raise ContractError(f"seller offer.{key} is not a uuid")
    if offer["sellerId"] != seller_id:
        raise ContractError("seller offer.sellerId is not the user asked for")
    if offer["title"] is not None and not isinstance(offer["title"], str):
        raise ContractError("seller offer.title is neither null nor a string")
    if not _is_number(offer["price"]) or offer["price"] <= 0 or not _has_two_decimals(offer["price"]):
        raise ContractError("seller offer.price is not a number > 0 with 2 decimals")
    if not _is_int(offer["stock"]) or offer["stock"] < 0:
        raise ContractError("seller offer.stock is not an integer >= 0")
    _timestamp(offer["createdAt"])


def check_offers(offers: Any, book_id: str) -> None:
    if not isinstance(offers, list):
        raise ContractError("offers is not an array")
    for offer in offers:
        check_offer(offer, book_id)
    prices = [offer["price"] for offer in offers]
    if prices != sorted(prices):
        raise ContractError("offers are not cheapest first")


def check_order(order: Any, order_id: str) -> None:
    check_keys("order", order, ORDER_KEYS)
    if order["id"] != order_id or not _is_uuid(order["userId"]):
        raise ContractError("order.id or order.userId is wrong")
    if order["status"] not in ORDER_STATUSES:
        raise ContractError(f"order.status {order['status']!r} is unknown")
    if order["status"] == "rejected" and not (isinstance(order["reason"], str) and order["reason"]):
        raise ContractError("rejected order without reason")
    if order["status"] == "confirmed" and order["reason"] is not None:
        raise ContractError("confirmed order with a reason")
    if not isinstance(order["items"], list):
        raise ContractError("order.items is not an array")
    if not _is_number(order["total"]):
        raise ContractError("order.total is not a number")
    cents = lambda value: Decimal(repr(value)).quantize(Decimal("0.01"))
    charged = Decimal(0)
    for item in order["items"]:
        check_keys("order item", item, ORDER_ITEM_KEYS)
        if order["status"] != "confirmed":
            if item["unitPrice"] is not None or item["total"] is not None:
                raise ContractError("unconfirmed order item with a price")
            continue
        if not (_is_number(item["unitPrice"]) and _is_number(item["total"])):
            raise ContractError("confirmed order item without unitPrice or total")
        if cents(item["unitPrice"]) * item["quantity"] != cents(item["total"]):
            raise ContractError("order item total is not unitPrice x quantity")
        charged += cents(item["total"])
    if cents(order["total"]) != charged:
        raise ContractError("order.total is not the sum of its items' totals")


# --------------------------------------------------------------------------
# Signing in
# --------------------------------------------------------------------------


def token(user_id: str) -> str:
    """A bearer token for `user_id`, as the app's sign-in would issue it."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iss": AUTH_ISSUER,
        "aud": AUTH_AUDIENCE,
        "iat": now,
        "exp": now + AUTH_TOKEN_TTL,
    }
    return jwt.encode(claims, AUTH_SECRET, algorithm="HS256")


def sign_in(client, user_id: str) -> None:
    """The requests `client` sends from now on act as `user_id`."""
    client.marketplace_auth = {"Authorization": f"Bearer {token(user_id)}"}


def _auth(client) -> dict:
    return dict(getattr(client, "marketplace_auth", None) or {})


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


def _header(response, name: str) -> Optional[str]:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _describe_error(response, endpoint: str) -> str:
    """A failure message that groups well in failures.csv (no ids in it)."""
    status = response.status_code
    if not status:
        return f"no response: {type(getattr(response, 'error', None)).__name__}: {getattr(response, 'error', '')}"
    content_type = (_header(response, "Content-Type") or "").split(";")[0]
    title = ""
    if content_type == "application/problem+json":
        try:
            problem = json.loads(response.content)
            title = f" {problem.get('type', '')} {problem.get('title', '')!r}"
        except ValueError:
            title = " (unparsable problem+json)"
    elif status >= 400:
        title = f" (content-type {content_type or 'missing'}, not problem+json)"
    message = f"HTTP {status}{title}"
    if status == 503:
        retry_after = _header(response, "Retry-After")
        RETRY_AFTER[(endpoint, retry_after)] += 1
        message += f" Retry-After={retry_after}"
    return message


def _honour_retry_after(response) -> None:
    if response.status_code == 503:
        try:
            delay = float(_header(response, "Retry-After") or 1)
        except ValueError:
            delay = 1.0
        gevent.sleep(min(delay, RETRY_AFTER_CAP))


def command(client, method: str, path: str, payload: dict) -> None:
    """Sends a write; it must answer 200 with an empty body.

    Anything else is marked failed and the current flow is abandoned
    (`RescheduleTask`): what follows depends on this write.
    """
    name = f"{method} {path}"
    with client.request(method, path, json=payload, name=name, headers=_auth(client), catch_response=True) as response:
        if response.status_code == 200:
            if response.content:
                response.failure(f"HTTP 200 with a body ({len(response.content)} bytes), expected empty")
            else:
                response.success()
                return
        else:
            response.failure(_describe_error(response, name))
    _honour_retry_after(response)
    raise RescheduleTask()


def query(
    client,
    path: str,
    name: str,
    check: Callable[[Any], None],
    not_found_ok: bool = False,
) -> Optional[Any]:
    """Sends a read and checks the answer.

    Returns the decoded JSON, or `None` for a `404` when `not_found_ok` (a
    problem+json `404` then counts as a success: "not there yet").
    Raises `RescheduleTask` when the response is wrong.
    """
    with client.get(path, name=name, headers=_auth(client), catch_response=True) as response:
        status = response.status_code
        content_type = (_header(response, "Content-Type") or "").split(";")[0].strip()
        if status == 404 and not_found_ok:
            if content_type == "application/problem+json":
                response.success()
                return None
            response.failure(f"HTTP 404 with content-type {content_type or 'missing'}, not problem+json")
        elif status != 200:
            response.failure(_describe_error(response, name))
        elif content_type != "application/json":
            response.failure(f"HTTP 200 with content-type {content_type or 'missing'}, not application/json")
        else:
            try:
                data = json.loads(response.content)
                check(data)
            except ValueError as error:  # JSONDecodeError included
                response.failure(f"unparsable JSON: {error.__class__.__name__}")
            except ContractError as error:
                response.failure(f"contract: {error}")
            else:
                response.success()
                return data
    _honour_retry_after(response)
    raise RescheduleTask()


def report_async(name: str, started: float, error: Optional[str] = None) -> None:
    """One `ASYNC` stats row: how long a write took to become visible."""
    events.request.fire(
        request_type="ASYNC",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=ContractError(error) if error else None,
        context={},
    )


def poll(
    client,
    path: str,
    name: str,
    check: Callable[[Any], None],
    done: Callable[[Optional[Any]], bool],
    not_found_ok: bool = False,
) -> Optional[Any]:
    """Reads `path` until `done(answer)` (answer `None` for a tolerated 404).

    At most `POLL_MAX` requests named `"<name> (poll)"`, with waits growing
    from 0.1 s to `POLL_WAIT_MAX`. Returns the last answer, or `None` if it
    never became done (the caller reports it).
    """
    wait = POLL_WAIT_FIRST
    for attempt in range(POLL_MAX):
        answer = query(client, path, f"{name} (poll)", check, not_found_ok=not_found_ok)
        if done(answer):
            return answer
        if attempt + 1 < POLL_MAX:
            gevent.sleep(wait)
            wait = min(wait * 1.5, POLL_WAIT_MAX)
    return None


# --------------------------------------------------------------------------
# Flows
# --------------------------------------------------------------------------


def sign_up(client) -> str:
    """A new user signs in with a new id and saves itself (`PUT /user`);
    returns the id."""
    user_id = new_id()
    sign_in(client, user_id)
    command(client, "PUT", "/user", {"id": user_id, "name": user_name()})
    return user_id


def browse_books(client, page: Optional[int] = None) -> list:
    """`GET /books?page=..&pageSize=..`; returns the books."""
    page = page or CATALOGUE.random_page()
    books = query(
        client,
        f"/books?page={page}&pageSize={PAGE_SIZE}",
        "GET /books?page=[n]&pageSize=[n]",
        lambda data: check_books_page(data, PAGE_SIZE),
    )
    CATALOGUE.saw_page(page, books)
    return books


def search_books(client, text: Optional[str] = None) -> list:
    """`GET /books?q=..&pageSize=..`: the first page of a search (a JSON
    array, best match first); returns the books. Without `text`, searches
    what a user would (`Catalogue.search_text`); with nothing to search
    for yet, browses instead."""
    text = text or CATALOGUE.search_text()
    if text is None:
        return browse_books(client)
    books = query(
        client,
        f"/books?{urlencode({'q': text, 'pageSize': PAGE_SIZE})}",
        "GET /books?q=[words]&pageSize=[n]",
        lambda data: check_books_page(data, PAGE_SIZE),
    )
    CATALOGUE.saw_books(books)
    return books


def my_orders(client, user_id: str, limit: int = 20) -> list:
    """`GET /users/{id}/orders?limit=..` as the user itself: the first page of
    its orders, newest first; returns them."""
    page = query(
        client,
        f"/users/{user_id}/orders?limit={limit}",
        "GET /users/{id}/orders",
        lambda data: check_list_page(data, limit, lambda order: check_own_order(order, user_id)),
    )
    return page["items"]


def my_offers(client, seller_id: str, limit: int = 20) -> list:
    """`GET /users/{id}/offers?limit=..` as the seller itself: the first page
    of its offers, newest first; returns them."""
    page = query(
        client,
        f"/users/{seller_id}/offers?limit={limit}",
        "GET /users/{id}/offers",
        lambda data: check_list_page(data, limit, lambda offer: check_seller_offer(offer, seller_id)),
    )
    return page["items"]


def view_book(client, book_id: str) -> dict:
    """`GET /books/{id}` of a book known to exist."""
    return query(client, f"/books/{book_id}", "GET /books/{id}", check_book)


def view_sellers(client, book_id: str) -> list:
    """`GET /offers/{bookId}`: the book's offers, cheapest first."""
    return query(client, f"/offers/{book_id}", "GET /offers/{bookId}", lambda data: check_offers(data, book_id))


def create_offer_flow(client, verify: bool = True, verify_book: bool = False, stock: Optional[int] = None) -> dict:
    """A new user signs up, browses, registers a new book and sells copies of it.

    With `verify`, polls `GET /offers/{bookId}` until the offer shows with
    the price, stock and seller sent (`ASYNC offer visible`); with
    `verify_book` also `GET /books/{id}` until the book carries it as its
    cheapest offer (`ASYNC book shows offer`), which only holds when nobody
    buys from it meanwhile. Returns the offer sent.
    """
    seller_id = sign_up(client)
    think()
    browse_books(client)
    think()
    book_id = new_id()
    command(client, "PUT", "/book", {"id": book_id, "title": book_title(), "author": book_author()})
    think()
    offer = {
        "id": new_id(),
        "bookId": book_id,
        "sellerId": seller_id,
        "price": price(),
        "stock": stock if stock is not None else offer_stock(),
    }
    command(client, "POST", "/offer", offer)
    sent = time.perf_counter()
    if not verify:
        CATALOGUE.add_offered(book_id)
        think()
        my_offers(client, seller_id)  # the new offer may not be applied yet
        return offer

    def shows_offer(offers: Optional[list]) -> bool:
        return any(o["id"] == offer["id"] for o in offers or [])

    offers = poll(client, f"/offers/{book_id}", "GET /offers/{bookId}", lambda d: check_offers(d, book_id), shows_offer)
    if offers is None:
        report_async("offer visible in /offers/{bookId}", sent, f"offer not listed after {POLL_MAX} polls")
        raise RescheduleTask()
    listed = next(o for o in offers if o["id"] == offer["id"])
    if listed["sellerId"] != seller_id or listed["price"] != stored_price(offer["price"]) or listed["stock"] > offer["stock"]:
        report_async("offer visible in /offers/{bookId}", sent, "offer listed with other seller, price or stock")
        raise RescheduleTask()
    report_async("offer visible in /offers/{bookId}", sent)
    CATALOGUE.add_offered(book_id)

    if verify_book:
        book = poll(
            client,
            f"/books/{book_id}",
            "GET /books/{id}",
            check_book,
            lambda b: b is not None and b["offerId"] == offer["id"],
            not_found_ok=True,
        )
        if book is None:
            report_async("book shows its cheapest offer", sent, f"book without its offer after {POLL_MAX} polls")
            raise RescheduleTask()
        if book["price"] != stored_price(offer["price"]) or book["stock"] != offer["stock"]:
            report_async("book shows its cheapest offer", sent, "book shows another price or stock than its offer")
            raise RescheduleTask()
        report_async("book shows its cheapest offer", sent)
    think()
    # The seller looks at its offers: the new one, already listed under its
    # book, must be there (the row's time: that one request).
    asked = time.perf_counter()
    if not any(o["id"] == offer["id"] for o in my_offers(client, seller_id)):
        report_async("offer in the seller's offers", asked, "a listed offer missing from GET /users/{id}/offers")
        raise RescheduleTask()
    report_async("offer in the seller's offers", asked)
    return offer


def find_offered_book(client, pages: int = 2) -> Optional[str]:
    """Searches for a book with an offer in stock, then browses up to
    `pages` pages for one."""
    offered = [b["id"] for b in search_books(client) if b["offerId"] is not None]
    if offered:
        return random.choice(offered)
    think()
    for _ in range(pages):
        books = browse_books(client)
        offered = [b["id"] for b in books if b["offerId"] is not None]
        if offered:
            return random.choice(offered)
        think()
    return None


def buy_flow(client, buyer_id: str) -> Optional[str]:
    """Search (or browse), open a book and its sellers, buy one copy from the
    cheapest, follow the order, then find it in the buyer's orders.

    When no book with copies on sale is found, the buyer first puts one on
    sale itself (new seller, book and offer), so there is always something
    to buy. Returns the final order status, or `None` if nothing was bought.
    """
    book_id = find_offered_book(client)
    if book_id is None:
        offer = create_offer_flow(client, verify=True, stock=random.randint(5, 20))
        book_id = offer["bookId"]
    think()
    view_book(client, book_id)
    think()
    offers = view_sellers(client, book_id)
    in_stock = [o for o in offers if o["stock"] >= 1]
    if not in_stock:
        return None  # sold out since the catalogue page was read: browse again next time
    cheapest = in_stock[0]
    think()

    order_id = new_id()
    item = {"offerId": cheapest["id"], "quantity": 1}
    sign_in(client, buyer_id)
    command(client, "POST", "/order", {"id": order_id, "userId": buyer_id, "items": [item]})
    sent = time.perf_counter()

    order = poll(
        client,
        f"/orders/{order_id}",
        "GET /orders/{id}",
        lambda data: check_order(data, order_id),
        lambda o: o is not None and o["status"] != "pending",
        not_found_ok=True,  # 404 while the command is still queued: "not yet"
    )
    if order is None:
        report_async("order settled", sent, f"order still pending or unknown after {POLL_MAX} polls")
        raise RescheduleTask()
    bought = [{"offerId": i["offerId"], "quantity": i["quantity"]} for i in order["items"]]
    if order["userId"] != buyer_id or bought != [item]:
        report_async("order settled", sent, "settled order with another user or items than sent")
        raise RescheduleTask()
    # Offers are never edited: a confirmed order paid the price listed.
    if order["status"] == "confirmed" and order["items"][0]["unitPrice"] != cheapest["price"]:
        report_async("order settled", sent, "confirmed order at another price than its offer's")
        raise RescheduleTask()
    # Both outcomes are legitimate; rejected happens when others bought the last copies.
    report_async(f"order {order['status']}", sent)
    think()
    # The buyer opens its orders: the settled order must be there, as
    # settled (the row's time: that one request).
    asked = time.perf_counter()
    listed = [o for o in my_orders(client, buyer_id) if o["id"] == order_id]
    if not listed or listed[0]["status"] != order["status"]:
        report_async("order in the buyer's orders", asked, "a settled order missing or unsettled in GET /users/{id}/orders")
        raise RescheduleTask()
    report_async("order in the buyer's orders", asked)
    return order["status"]


# --------------------------------------------------------------------------
# End of test summary
# --------------------------------------------------------------------------


@events.quitting.add_listener
def _print_retry_after(environment, **_kwargs) -> None:
    if not RETRY_AFTER:
        return
    LOG.warning("503 answers by endpoint and Retry-After:")
    for (endpoint, retry_after), count in sorted(RETRY_AFTER.items(), key=lambda kv: str(kv[0])):
        LOG.warning("  %-28s Retry-After=%s: %d", endpoint, retry_after, count)
