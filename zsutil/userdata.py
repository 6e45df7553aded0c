"""How user data is written and judged, the part controller and agent must agree on (reference §3.3 and the
seed's section 2): the controller warns about the user data the flat network's metadata service will serve.

* :func:`decode_minified` turns the seed's ``\\n``-minified form (``sed ':a;N;$!ba;s/\\n/\\\\n/g'``) back into
  real newlines. Text that already has real newlines is left alone (it was never minified).
* :func:`userdata_warnings` explains why cloud-init would not apply a given user data, for the API reply.
"""

from __future__ import annotations

import yaml

#: Headers cloud-init recognises as user-data part types (cloudinit/handlers, cloudinit/user_data.py).
KNOWN_HEADERS = ("#cloud-config", "#!", "#include", "#include-once", "#cloud-boothook", "#part-handler",
                 "#upstart-job", "#cloud-config-archive", "#cloud-config-jsonp", "## template: jinja")


def decode_minified(text: str) -> str:
    """Decode literal ``\\n`` sequences to newlines iff the text has no real newline (the seed's form)."""
    if "\n" in text or "\\n" not in text:
        return text
    return text.replace("\\n", "\n")


def userdata_warnings(text: str | None) -> list[str]:
    """Reasons cloud-init would not apply ``text`` as intended (empty list: no objection)."""
    if text is None or not text.strip():
        return []
    first = text.lstrip("\ufeff").splitlines()[0].rstrip() if text.splitlines() else ""
    if first.startswith("#cloud-config"):
        return _cloud_config_warnings(text)
    if any(first.startswith(h) for h in KNOWN_HEADERS):
        return []
    return [f"user data starts with {first[:60]!r}, not a header cloud-init knows (#cloud-config, #!, "
            "#include, #cloud-boothook, ...): cloud-init will store it but not apply it; "
            "add '#cloud-config' as the first line for a cloud-config document"]


def _cloud_config_warnings(text: str) -> list[str]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return [f"#cloud-config is not valid YAML{where}: {problem}; cloud-init will ignore it "
                "(check the indentation of nested lists and mappings)"]
    if doc is None:
        return ["#cloud-config has no content"]
    if not isinstance(doc, dict):
        return [f"#cloud-config top level is a {type(doc).__name__}, not a mapping of module keys "
                "(users:, ssh_authorized_keys:, ...); cloud-init will ignore it"]
    return []
