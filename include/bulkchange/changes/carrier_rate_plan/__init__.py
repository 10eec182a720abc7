"""CarrierRatePlanChange: move devices to another carrier rate plan (legacy_behaviour.md 3.6), one module
per carrier family (jasper, thingspace, telegence, teal, pond); shared parts in ``common``."""
