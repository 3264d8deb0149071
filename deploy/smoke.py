#!/usr/bin/env python3
"""Client-side checks of a deployed marketplace, standard library only.

    smoke.py flow URL                  the mobile flow: a user, a book, an offer,
                                       an order, then the offer, the book and the
                                       order read back as a client would see them
    smoke.py poll URL STOPFILE         reads a book over and over until STOPFILE
                                       exists; prints how many requests were
                                       served and how many failed (exit 1 if any)
    smoke.py offers URL N STATE        sends N offers for one new book, keeps
                                       what it sent in STATE (JSON)
    smoke.py applied URL STATE         waits until every offer accepted is listed
                                       under its book; prints accepted vs applied

Every wait polls with a deadline (DEADLINE seconds, default 60), never a
fixed sleep. Exits non-zero with the reason when a check fails.

Requests act as a signed-in user: `Authorization: Bearer <token>`, an HS256
JWT signed with MARKETPLACE_AUTH_SECRET (default: docker-compose.yml's
development secret), `sub` the id of the user acting, `iss` and `aud`
`marketplace`, valid 10 minutes. The token is made with PyJWT when it is
installed, else by the few lines below (the same standard token).
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

try:
    import jwt  # PyJWT
except ImportError:  # the standard library is enough for HS256
    jwt = None

DEADLINE = float(os.environ.get("DEADLINE", "60"))
TIMEOUT = 5


DEVELOPMENT_SECRET = "marketplace-development-secret-do-not-use-in-production"
AUTH_SECRET = os.environ.get("MARKETPLACE_AUTH_SECRET") or DEVELOPMENT_SECRET
ISSUER = AUDIENCE = "marketplace"
TOKEN_TTL = 600

# The user requests act as (set by `sign_in`).
ACTING = {"token": None}


class CheckFailed(Exception):
    pass


def _b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(user):
    """A bearer token for `user`, signed with AUTH_SECRET."""
    now = int(time.time())
    claims = {"sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + TOKEN_TTL}
    if jwt is not None:
        return jwt.encode(claims, AUTH_SECRET, algorithm="HS256")
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(AUTH_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def sign_in(user):
    """Requests from now on act as `user`."""
    ACTING["token"] = token(user)


def request(method, url, body=None):
    """(status, parsed JSON or None); a connection failure raises OSError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if ACTING["token"]:
        req.add_header("authorization", f"Bearer {ACTING['token']}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw) if raw else None
        except ValueError:
            return err.code, raw.decode(errors="replace")


def write(base, method, path, body):
    status, answer = request(method, base + path, body)
    if status != 200:
        raise CheckFailed(f"{method} {path}: {status} {answer}")


def wait_for(what, probe):
    """Calls probe() until it returns a true value; raises after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as err:
            last = f"connection: {err}"
        else:
            if last and not isinstance(last, str):
                return last
        time.sleep(0.2)
    raise CheckFailed(f"{what}: not seen within {DEADLINE:.0f}s (last: {last})")


def get_json(base, path):
    status, answer = request("GET", base + path)
    return answer if status == 200 else f"{status} {answer}"


def wait_ready(base):
    """The containers' health checks ask liveness; traffic waits for readiness."""

    def ready():
        status, answer = request("GET", base + "/health/ready")
        return status == 200 or f"{status} {answer}"

    wait_for("the API ready (/health/ready)", ready)


def flow(base):
    wait_ready(base)
    started = time.monotonic()
    user, book, offer, order = (str(uuid.uuid4()) for _ in range(4))
    sign_in(user)
    write(base, "PUT", "/user", {"id": user, "name": "Ann"})
    write(base, "PUT", "/book", {"id": book, "title": "Dune", "author": "Frank Herbert"})
    write(
        base,
        "POST",
        "/offer",
        {"id": offer, "bookId": book, "sellerId": user, "price": 12.5, "stock": 3},
    )

    def offer_listed():
        offers = get_json(base, f"/offers/{book}")
        return isinstance(offers, list) and any(o.get("id") == offer for o in offers) and offers

    wait_for("the offer under its book", offer_listed)
    write(
        base,
        "POST",
        "/order",
        {"id": order, "userId": user, "items": [{"offerId": offer, "quantity": 1}]},
    )

    def order_settled():
        answer = get_json(base, f"/orders/{order}")
        if isinstance(answer, dict) and answer.get("status") in ("confirmed", "rejected"):
            return answer
        return None

    settled = wait_for("the order settled", order_settled)
    if settled["status"] != "confirmed":
        raise CheckFailed(f"order {order} was {settled['status']}: {settled.get('reason')}")

    def stock_claimed():
        offers = get_json(base, f"/offers/{book}")
        mine = [o for o in offers if o.get("id") == offer] if isinstance(offers, list) else []
        return mine and mine[0].get("stock") == 2 and mine[0]

    wait_for("the offer's stock down to 2", stock_claimed)

    def book_up_to_date():
        answer = get_json(base, f"/books/{book}")
        ok = (
            isinstance(answer, dict)
            and answer.get("offerId") == offer
            and answer.get("stock") == 2
            and abs(float(answer.get("price", 0)) - 12.5) < 1e-9
        )
        return ok and answer

    wait_for("the book showing its cheapest offer (12.5, stock 2)", book_up_to_date)
    print(f"flow: user, book, offer, order confirmed, offer and book up to date "
          f"in {time.monotonic() - started:.2f}s against {base}")


def poll(base, stopfile):
    """Reads one book until stopfile appears; every answer must be 200."""
    wait_ready(base)
    user, book, offer = (str(uuid.uuid4()) for _ in range(3))
    sign_in(user)
    write(base, "PUT", "/user", {"id": user, "name": "Poller"})
    write(base, "PUT", "/book", {"id": book, "title": "Polled", "author": "Client"})
    wait_for("the polled book", lambda: isinstance(get_json(base, f"/books/{book}"), dict))
    print("poll: started", flush=True)
    served = failed = 0
    failures = []
    started = time.monotonic()
    while not os.path.exists(stopfile):
        try:
            status, _ = request("GET", f"{base}/books/{book}")
        except OSError as err:
            status = f"connection: {err}"
        if status == 200:
            served += 1
        else:
            failed += 1
            if len(failures) < 10:
                failures.append(f"{time.monotonic() - started:.1f}s: {status}")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    print(f"poll: {served} requests served, {failed} failed in {elapsed:.0f}s")
    for failure in failures:
        print(f"  failed at {failure}")
    if failed or not served:
        raise CheckFailed("the poller saw failed requests" if failed else "nothing served")


def offers(base, count, state):
    wait_ready(base)
    seller, book = str(uuid.uuid4()), str(uuid.uuid4())
    sign_in(seller)
    write(base, "PUT", "/user", {"id": seller, "name": "Seller"})
    write(base, "PUT", "/book", {"id": book, "title": "Many offers", "author": "Workers"})
    accepted = []
    for i in range(count):
        offer = str(uuid.uuid4())
        body = {"id": offer, "bookId": book, "sellerId": seller, "price": 10 + i / 100, "stock": 1}
        write(base, "POST", "/offer", body)
        accepted.append(offer)
    with open(state, "w", encoding="utf-8") as f:
        json.dump({"book": book, "offers": accepted}, f)
    print(f"offers: {len(accepted)} accepted for book {book}")


def applied(base, state):
    with open(state, encoding="utf-8") as f:
        sent = json.load(f)
    book, accepted = sent["book"], set(sent["offers"])

    # Up to 1000 offers in one page (the default page is 100).
    def all_listed():
        listed = get_json(base, f"/offers/{book}?limit=1000")
        ids = {o.get("id") for o in listed} if isinstance(listed, list) else set()
        return accepted <= ids and ids

    try:
        ids = wait_for(f"all {len(accepted)} offers applied", all_listed)
    except CheckFailed:
        listed = get_json(base, f"/offers/{book}?limit=1000")
        have = len({o.get("id") for o in listed}) if isinstance(listed, list) else 0
        print(f"applied: {have} of {len(accepted)} accepted offers")
        raise
    print(f"applied: {len(accepted & ids)} of {len(accepted)} accepted offers, none lost")


def main(argv):
    commands = {
        "flow": (flow, 1),
        "poll": (poll, 2),
        "offers": (lambda b, n, s: offers(b, int(n), s), 3),
        "applied": (applied, 2),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    func, _ = commands[argv[1]]
    base = argv[2].rstrip("/")
    try:
        func(base, *argv[3:])
    except (CheckFailed, OSError) as err:
        print(f"{argv[1]}: FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
