"""The sandbox's exceptions: a stand-in program, with a small tree of its own.

    SandboxError        anything a sandbox raises on purpose
    ├── ApiError        answered as a DHIS2 WebMessage (context.py)
    ├── FilterError     a fields or filter expression DHIS2 would reject (fields.py)
    ├── InvalidPeriod   text DHIS2 would not accept as a period identifier (periods.py)
    ├── ParamError      a tracker import parameter DHIS2 would refuse (tracker_import.py)
    └── PayloadError    a body that is not a tracker payload (tracker_payload.py)

They stay out of the gateway's tree (``gateway.errors``): the sandbox imitates DHIS2 and
answers as DHIS2 does, not as the gateway does.
"""

from __future__ import annotations

__all__ = ["SandboxError"]


class SandboxError(Exception):
    """Anything a sandbox raises on purpose."""
