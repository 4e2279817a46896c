"""Built-in MIL heads. Each takes a padded bag ``x [B, N, D]`` with ``mask [B, N]`` (True = real instance)
and returns logits and per-instance attention; padding never enters a softmax."""
