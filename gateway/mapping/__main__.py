"""``python -m gateway.mapping`` runs the ``mappings`` CLI on its own."""

from gateway.mapping.cli import mappings_app

mappings_app()
