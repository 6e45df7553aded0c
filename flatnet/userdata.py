"""User data rendering (pure functions; reference §3.3 and the seed's section 2). How user data is decoded and
judged (:func:`~zsutil.userdata.decode_minified`, :func:`~zsutil.userdata.userdata_warnings`) lives in
``zsutil.userdata``, shared with the controller.

* :func:`render_userdata`: a ``userdata::`` value wins (decoded as above); otherwise ``sshkey::`` and
  ``rootPassword::`` become a ``#cloud-config``; otherwise there is no user data (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from zsutil.userdata import decode_minified


def render_userdata(userdata: str | None, ssh_keys: Sequence[str] = (),
                    root_password: str | None = None) -> str | None:
    """The user data a VM gets. Deterministic: the same inputs give the same bytes."""
    if userdata:
        return decode_minified(userdata)
    keys = [k.strip() for k in ssh_keys if k and k.strip()]
    if not keys and not root_password:
        return None
    doc: dict[str, object] = {}
    if keys:
        doc["ssh_authorized_keys"] = keys
        doc["disable_root"] = False
    text = "#cloud-config\n" + (yaml.safe_dump(doc, default_flow_style=False, sort_keys=False) if doc else "")
    if root_password:
        # chpasswd's ``list`` is a literal block, as 1.0 wrote it; dumped by hand so it stays ``list: |``.
        pw_yaml = yaml.safe_dump(f"root:{root_password}", default_style='"').strip()
        text += ("ssh_pwauth: true\n"
                 "chpasswd:\n"
                 "  list: |\n"
                 f"    {_literal_line(root_password, pw_yaml)}\n"
                 "  expire: False\n")
    return text


def _literal_line(password: str, quoted: str) -> str:
    """A ``root:<pw>`` line for a YAML literal block; a password with a newline cannot live there."""
    if "\n" in password or "\r" in password:
        raise ValueError(f"rootPassword must be a single line, got {quoted}")
    return f"root:{password}"
