"""Drafted (speculative) decoding by prompt lookup, against the small ``Decoder`` protocol
(decoder.py) and never against a backend: the proposer (lookup.py), the draft-length policy
(policy.py), verification (verify.py), where batches are exact (exact_batches.py), the batch-cost
curve (calibrate.py) and the token sources of the decode loop (decoding.py)."""
