"""The labeling pipeline: :mod:`.labeler` orchestrates, :mod:`.settings` decides. The
stages: the exemplar pass (:mod:`.exemplar_pass`, streaming :mod:`.topk`, the
:mod:`.activation_cache`), patches (:mod:`.patches` geometry, :mod:`.patch_requests`),
scoring (:mod:`.scoring_plan`, :mod:`.patch_scoring`, :mod:`.image_sample`), and
explanations (:mod:`.aggregation`, :mod:`.explanations`, :mod:`.describe`), with what they
share in :mod:`.evidence`.

Imports errors, data, runtime and plugins of the core."""
