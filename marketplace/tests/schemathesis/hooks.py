"""schemathesis hooks of the authenticated run (`SCHEMATHESIS_HOOKS`).

With authentication on, a write names its owner (`id` of `PUT /user`,
`sellerId` of `POST /offer`, `userId` of `POST /order`) and the API answers
`403` unless that is the signed-in user. Random UUIDs would only ever reach
that `403`: in about half of the generated bodies whose owner field is a
UUID, it becomes the user of the token (`FUZZ_AUTH_USER`), so the accepted
path is fuzzed too. A UUID replaces a UUID, so a body valid against the
schema stays valid and an invalid one stays invalid.
"""

import os
import re

import schemathesis

USER = os.environ.get("FUZZ_AUTH_USER", "")
OWNER_FIELDS = {"/user": "id", "/offer": "sellerId", "/order": "userId"}
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
