"""Conformance kit: the CapabilityStatement source of truth and a suite to check any server against it."""
