"""The HTTP API: FHIR REST at /fhir, ingest, admin and health endpoints."""
