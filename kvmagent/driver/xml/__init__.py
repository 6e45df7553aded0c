"""Domain XML from small device objects, one module per device (virt-manager ``virtinst`` style).

``build_domain_xml(spec, domain_type=..., console_log=...)`` is the entry point; ``edit`` holds the few
rewrites the driver applies to an existing definition (boot order, CD-ROM source, metadata reads).
"""

from kvmagent.driver.xml.domain import build_domain_xml

__all__ = ["build_domain_xml"]
