"""Checking explanations: the metric functions (:mod:`.metrics`), agreement with ground
truth (:mod:`.accuracy`), the layer profile (:mod:`.layer_profile`), faithfulness on
held-out images (:mod:`.faithfulness`), the causal ablation test (:mod:`.ablation`), and
the plugin that registers them as evaluators (:mod:`.plugin`).

Imports errors, data, runtime, plugins and pipeline of the core."""
