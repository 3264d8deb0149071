"""schemathesis hooks of the authenticated run (`SCHEMATHESIS_HOOKS`).

With authentication on, a write names its owner (`id` of `PUT /user`,
`sellerId` of `POST /offer`, `userId` of `POST /order`) and the API answers
`403` unless that is the signed-in user. Random UUIDs would only ever reach
that `403`: in about half of the generated bodies whose owner field is a
UUID, it becomes the user of the token (`FUZZ_AUTH_USER`), so the accepted
path is fuzzed too. A UUID replaces a UUID, so a body valid against the
schema stays valid and an invalid one stays invalid.

A user's own lists (`GET /users/{id}/orders`, `GET /users/{id}/offers`) are
read only by that user: the path's `id` becomes the user of the token in
about half of the cases, the same way.
"""

import os
import re

import schemathesis

USER = os.environ.get("FUZZ_AUTH_USER", "")
OWNER_FIELDS = {"/user": "id", "/offer": "sellerId", "/order": "userId"}
OWNER_PATHS = {"/users/{id}/orders", "/users/{id}/offers"}
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if not USER or operation is None or not isinstance(body, dict):
        return body
    field = OWNER_FIELDS.get(operation.path)
    value = body.get(field) if field else None
    # Deterministic (the same body maps the same way), as hypothesis requires.
    if isinstance(value, str) and UUID.match(value) and value[0] in "01234567":
        return {**body, field: USER}
    return body


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    operation = context.operation
    if not USER or operation is None or operation.path not in OWNER_PATHS:
        return path_parameters
    value = path_parameters.get("id")
    if isinstance(value, str) and UUID.match(value) and value[0] in "01234567":
        return {**path_parameters, "id": USER}
    return path_parameters
