"""New users put books on sale.

Each iteration is a new user of the mobile app: signs up (`PUT /user`),
browses the catalogue (`GET /books?page=..&pageSize=..`), registers a book
that is not in the marketplace yet (`PUT /book`) and offers copies of it
(`POST /offer`, a float price with many decimals and a stock of 1..9999,
as the original clients send them). Then, unless `VERIFY=0`, it polls
`GET /offers/{bookId}` until the offer is listed with the seller and stock
sent and the price sent rounded to cents, and `GET /books/{id}` until the book
carries it as its cheapest offer (the `refresh-cheapest-offer` subscriber);
then the seller opens its offers (`GET /users/{id}/offers`), where the new
one must be listed (with `VERIFY=0` the list is only checked against the
contract: the offer may not be applied yet).

    locust -f new-user-create-offer.py --host http://127.0.0.1:8080
"""

import os

from locust import FastHttpUser, between, task

import common

VERIFY = os.environ.get("VERIFY", "1") != "0"


class NewUserCreateOffer(FastHttpUser):
    wait_time = between(1, 3)

    @task
    def sign_up_and_sell_a_book(self):
        common.create_offer_flow(self.client, verify=VERIFY, verify_book=VERIFY)
