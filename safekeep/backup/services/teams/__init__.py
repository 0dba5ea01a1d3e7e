"""Microsoft Teams: the collector (``collect``) and the transcript export (``transcript``).

Not yet declared in ``safekeep.registry``: a team is a new kind of protected object (neither
a user nor a site), which the registry's account kinds do not cover yet.
"""
