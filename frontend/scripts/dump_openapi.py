"""Print the server's OpenAPI schema as JSON, for `npm run gen-types` (openapi-typescript reads it).

The schema comes from the app itself (no running server, no broker): the UI's TypeScript types are
generated from the same dataclasses (src/celery_flow/flow/model.py) the API answers with.
"""

from __future__ import annotations

import json
import sys

from celery_flow.server import create_app


def main() -> None:
    app = create_app(store="sqlite:///:memory:", embedded_consumer=False)
    json.dump(app.openapi(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
