"""CHW FHIR gateway: maps community care records to FHIR R4, serves and syncs them."""

__version__ = "0.1.0"
