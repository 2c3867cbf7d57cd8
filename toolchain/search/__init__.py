"""AMC search under a latency budget: the environment, the DDPG agent, baseline strategies and the search loop."""
