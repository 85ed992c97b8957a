"""Rural credit: data trust, farm features, an explainable scorecard, loan assessment (to come)."""
