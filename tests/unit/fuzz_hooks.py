"""schemathesis hooks of test_api_fuzz's "schema not looser than validation" run (SCHEMATHESIS_HOOKS).

System tags have one format per tag pattern and resource type (``staticIp::<l3>::<ip>`` on a VM, ...),
checked by the tag service and tested in test_record_apis / the tag tests; JSON Schema does not express
that, so that run leaves cases carrying system tags out (the server-error run keeps them)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    return not (isinstance(body, dict) and body.get("systemTags"))
