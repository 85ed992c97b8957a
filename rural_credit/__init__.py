"""Rural credit: a library over tables (pandas) and plain values, from trusted farm data to a decision.

``trust`` grades the data, ``features`` turns it into farm characteristics, ``scorecard`` is a
generic, explainable integer-points scorecard (trained with optbinning and scikit-learn, saved and
scored as JSON data), and ``assessment`` brings them together.  It never imports ``cloud``: the
cloud hands it data and stores its results.
"""
