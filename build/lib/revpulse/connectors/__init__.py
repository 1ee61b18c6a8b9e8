"""Provider connectors: raw provider payloads (webhook bodies, CDC records) mapped to SPEC §1 canonical events."""
