"""Buyers buy one copy from the cheapest seller and follow their order.

A buyer signs up once (`PUT /user`), then repeatedly: searches the catalogue
(`GET /books?q=..&pageSize=..`: a surname, a surname and a title word, or a
title word, from the seed's vocabulary or the books seen) for a book with
copies on sale (`offerId` not null), else browses it
(`GET /books?page=..&pageSize=..`); opens the book (`GET /books/{id}`) and
its sellers (`GET /offers/{bookId}`), buys one copy from the cheapest seller
with stock (`POST /order`, quantity 1) and polls `GET /orders/{id}` until
the order is `confirmed` or `rejected`. A `404` while the command is still
queued and `pending` mean "not yet"; `rejected` is a legitimate outcome when
other buyers took the last copies. Both outcomes are counted (`ASYNC order
confirmed` / `ASYNC order rejected`). Then it opens its orders
(`GET /users/{id}/orders`), where the order must be, settled
(`ASYNC order in the buyer's orders`).

When the search and the pages browsed hold no book on sale (an empty marketplace, or
everything sold out), the buyer first puts one on sale itself (new seller,
book and offer of 5..20 copies), so there is always something to buy.

    locust -f buyer.py --host http://127.0.0.1:8080
"""

from locust import FastHttpUser, between, task

import common


class Buyer(FastHttpUser):
    wait_time = between(1, 3)
    buyer_id = None

    @task
    def buy_a_book(self):
        if self.buyer_id is None:
            self.buyer_id = common.sign_up(self.client)
            common.think()
        common.buy_flow(self.client, self.buyer_id)
