"""Print the OpenAPI document the app serves (``make openapi`` commits it to openapi/)."""

from __future__ import annotations

import json
from typing import Any

from safekeep.api.app import create_app
from safekeep.settings import Settings


def document() -> dict[str, Any]:
    # Settings that do not depend on the environment, so the document is reproducible.
    app = create_app(Settings(_env_file=None))
    return app.openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
