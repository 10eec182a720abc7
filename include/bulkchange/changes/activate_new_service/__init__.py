"""ActivateNewService: activate new lines of service (legacy_behaviour.md 3.2), one module per carrier
family (only telegence today)."""
