"""The node description of a simulated host for libvirt's test driver (``test:///<abs path>/node.xml``).

Each connection to such a URI gets a private in-memory hypervisor initialised from the file: the CPUs and
memory below, and the listed bridges as libvirt interfaces (so ``bridge_exists`` works on simulated hosts).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr


def write_node_xml(path: Path, *, cpus: int = 8, mhz: int = 2400, memory_bytes: int = 16 << 30,
                   bridges: Iterable[str] = ("br_eth0",)) -> str:
    """Write ``path`` and return the test-driver URI for it."""
    ifaces = "".join(
        f"  <interface type='bridge' name={quoteattr(b)}><start mode='onboot'/>"
        f"<bridge stp='off'/></interface>\n" for b in bridges)
    xml = (f"<node>\n  <cpu><mhz>{mhz}</mhz><model>x86_64</model><active>{cpus}</active><nodes>1</nodes>"
           f"<sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>\n"
           f"  <memory>{memory_bytes // 1024}</memory>\n{ifaces}</node>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml)
    return f"test://{path.resolve()}"
