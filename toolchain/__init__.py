"""AMC channel pruning under a measured-latency budget, for Android."""
