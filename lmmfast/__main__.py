"""python -m lmmfast: fit the lecture notes' RIKZ example and print lme4's summary."""

import lmmfast

rikz = lmmfast.datasets.load("rikz")
fit = lmmfast.lmer("Richness ~ NAP + (1 | Beach)", data=rikz)
print(fit.summary())
