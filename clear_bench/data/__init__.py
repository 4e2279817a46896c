"""CT data: the scan model, readers for the formats users have, HU windowing and slice selection."""
