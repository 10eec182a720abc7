"""StatusUpdate: move devices to a new status on their carrier (legacy_behaviour.md 3.1), one module
per carrier family (jasper, thingspace, telegence, teal, pond)."""
