"""Secrets: envelope encryption of secret values, their data keys, destroy and rotation.

Which values are secret and how a masked one looks is the pure domain's
(configsync.domain.secrets); this package holds the keys and does the cryptography.
"""
