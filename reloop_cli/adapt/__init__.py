"""Adapting a live version between two retrains: predictions corrected from the day's labelled
impressions as they arrive, without waiting for the next night's version."""
