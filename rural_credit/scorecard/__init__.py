"""The scorecard: an explainable, integer-points credit scorecard that any tabular credit data can train.

Training (``training``, ``binning``) uses optbinning and scikit-learn; what it produces is a JSON model
file (``model_file``) that scoring (``scoring``), monitoring (``monitoring``) and the registry
(``registry``) read with numpy and pandas alone, so a scoring process never imports a training
library and a model is data that can be read, diffed and approved, not a pickle.

Import the part you need (``from rural_credit.scorecard.scoring import ScoreModel``): this package
imports nothing itself, so importing the scorer stays light.
"""
