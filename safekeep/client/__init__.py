"""Small clients of Safekeep's own API (used by the CLI)."""
