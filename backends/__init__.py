"""Foundation-model backends (scorers, vocabularies), as ordinary plugins."""
