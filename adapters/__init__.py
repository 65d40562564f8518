"""The outside world of models, data and attributions, as ordinary plugins."""
