"""Valid inference on differentially private data (covariates with additive Gaussian noise of
known variance), in memory or inside the warehouse: see docs/inference.md.

    from fort_hub.inference import LinearRegression, SQLSource
    m = LinearRegression(["shares", "reactions"], "views", random_state=0).fit(df)
    m.summary()
"""

from fort_hub.inference.base import InferenceWarning
from fort_hub.inference.linear import LinearRegression
from fort_hub.inference.logistic import LogisticRegression
from fort_hub.inference.sql import SQLSource
from fort_hub.inference.summary import SummaryStatistics

__all__ = [
    "InferenceWarning",
    "LinearRegression",
    "LogisticRegression",
    "SQLSource",
    "SummaryStatistics",
]
