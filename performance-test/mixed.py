"""Traffic shaped like the mobile app's: mostly reads, some writes.

One user class with weighted tasks:

| weight | task |
|---|---|
| 50 | browse a page of the catalogue (`GET /books?page=..&pageSize=..`) |
| 10 | search the catalogue (`GET /books?q=..&pageSize=..`) |
| 20 | view the sellers of a book (`GET /offers/{bookId}`) |
| 10 | view a book (`GET /books/{id}`) |
|  7 | new user puts a new book on sale (`PUT /user`, `GET /books`, `PUT /book`, `POST /offer`, poll `GET /offers/{bookId}`, `GET /users/{id}/offers`) |
|  3 | search or browse, open a book and its sellers, buy one copy from the cheapest seller and follow the order (`POST /order`, poll `GET /orders/{id}`, `GET /users/{id}/orders`) |

Books viewed are ones this process saw in catalogue pages or created, so
`GET /books/{id}` must answer `200`.

    locust -f mixed.py --host http://127.0.0.1:8080
"""

from locust import FastHttpUser, between, task

import common


class MobileAppUser(FastHttpUser):
    wait_time = between(0.5, 2)
    buyer_id = None

    @task(50)
    def browse_books(self):
        common.browse_books(self.client)

    @task(10)
    def search_books(self):
        common.search_books(self.client)

    @task(20)
    def view_sellers(self):
        book_id = common.CATALOGUE.random_offered_book() or common.CATALOGUE.random_book()
        if book_id is None:
            common.browse_books(self.client, page=1)
            return
        common.view_sellers(self.client, book_id)

    @task(10)
    def view_book(self):
        book_id = common.CATALOGUE.random_book()
        if book_id is None:
            common.browse_books(self.client, page=1)
            return
        common.view_book(self.client, book_id)

    @task(7)
    def create_offer(self):
        # No book check: buyers may take the copies before it is seen.
        common.create_offer_flow(self.client, verify=True, verify_book=False)

    @task(3)
    def buy(self):
        if self.buyer_id is None:
            self.buyer_id = common.sign_up(self.client)
        common.buy_flow(self.client, self.buyer_id)
