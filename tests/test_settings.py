"""Settings: defaults, camelCase keys, invalid values reported and ignored."""
from cromwell_lsp.settings import Features, Settings


def test_defaults_and_valid_values():
    s, errors = Settings.parse({"maxTokens": 32, "temperature": 0, "cacheBudgetMb": 64,
                                "features": {"hover": False}, "modelPath": "/m.safetensors"})
    assert errors == []
    assert (s.max_tokens, s.temperature, s.cache_budget_mb, s.model_path) == (32, 0.0, 64, "/m.safetensors")
    assert s.features == Features(hover=False)


def test_invalid_values_are_reported_and_keep_the_old_value():
    base, _ = Settings.parse({"maxTokens": 100})
    s, errors = Settings.parse({"maxTokens": "many", "threads": -3, "temperature": 9.0,
                                "debounceMs": True, "colour": "red",
                                "features": {"hover": "yes", "telepathy": True}}, base)
    assert s.max_tokens == 100 and s.threads == 0 and s.temperature == 0.0 and s.debounce_ms == 30
    assert s.features == Features()
    joined = "\n".join(errors)
    for word in ("max_tokens", "threads", "temperature", "debounce_ms", "'colour'", "hover", "telepathy"):
        assert word in joined
    assert len(errors) == 7


def test_shapes_of_raw_settings():
    assert Settings.parse(None) == (Settings(), [])
    s, errors = Settings.parse(["not", "a", "dict"])
    assert s == Settings() and errors
    s, errors = Settings.parse({"cromwell": {"idleMs": 100}})
    assert s.idle_ms == 100 and not errors
