"""Typed surface of ``dhis2_sandbox`` (loaded lazily by ``__init__.py``)."""

from .app import create_sandbox_app as create_sandbox_app
from .auth import DEFAULT_TOKEN as DEFAULT_TOKEN
from .auth import SandboxUser as SandboxUser
from .auth import make_token as make_token
from .context import SandboxSettings as SandboxSettings
from .context import SandboxState as SandboxState
from .faults import FaultConfig as FaultConfig
from .faults import OutageWindow as OutageWindow
from .server import SandboxServer as SandboxServer
from .server import serve as serve
