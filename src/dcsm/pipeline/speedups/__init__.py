"""Speed-ups that leave every number unchanged: each one is measured by a benchmark script and
checked against the plain computation by the tests."""
