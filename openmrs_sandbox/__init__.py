"""A stand-in for the OpenMRS FHIR2 module (``/openmrs/ws/fhir2/R4``), written from its documented behaviour.

It imports nothing from the gateway: it judges what the gateway's OpenMRS destination sends.
"""

from openmrs_sandbox.app import BASE, OpenMrs, create_app
from openmrs_sandbox.site import Site, reference_site

__all__ = ["BASE", "OpenMrs", "Site", "create_app", "reference_site"]
