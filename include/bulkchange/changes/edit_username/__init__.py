"""EditUsernameCostCenter: a device's username and cost centers (legacy_behaviour.md 3.9), one module per
carrier family (jasper, telegence, thingspace); shared context, validation and Rev.io update in ``common``."""
