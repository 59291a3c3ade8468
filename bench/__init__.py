"""`make bench`: shopjobs' speed against raw arq, SAQ and BullMQ, measured in one run.

Everything here is development tooling, never deployed: the harness (`python -m bench`), the
baseline workers it starts, a bench-only web app and a small HTTP load generator.
"""
