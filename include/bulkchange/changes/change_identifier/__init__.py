"""ChangeICCIDAndIMEI: a device gets a new SIM or new equipment (legacy_behaviour.md 3.8), one module per
carrier family (jasper, thingspace, telegence); shared validation in ``common``."""
