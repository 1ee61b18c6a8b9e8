"""A synthetic SaaS business: believable event streams for the demo, the tests and the benchmark."""
