# Profile-interval references (issue 9, item 5): exports the data sets to data/*.csv and
# writes lme4's confint(method = "profile") for them to profile_refs.json.
# Run from this directory: Rscript profile_refs.R   (lme4 1.1-31, nlme, pbkrtest)
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
data(Orthodont, package = "nlme")
orth <- as.data.frame(Orthodont)
orth$Subject <- as.character(orth$Subject)
orth$Sex <- as.character(orth$Sex)
write.csv(orth, "data/Orthodont.csv", row.names = FALSE)
data(beets, package = "pbkrtest")  # the issue says lmerTest; the data set is pbkrtest's
beets <- as.data.frame(beets)
write.csv(beets, "data/beets.csv", row.names = FALSE)

ci <- function(fit) {
  x <- confint(fit, method = "profile", oldNames = FALSE)
  list(names = rownames(x), lower = unname(x[, 1]), upper = unname(x[, 2]),
       deviance = deviance(fit), theta = unname(getME(fit, "theta")))
}
orth_fit <- lmer(distance ~ age * Sex + (age | Subject), orth, REML = FALSE)
beets_fit <- lmer(sugpct ~ block + sow + harvest + (1 | block:harvest), beets, REML = FALSE)
out <- list(lme4 = as.character(packageVersion("lme4")),
            orthodont = ci(orth_fit), beets = ci(beets_fit))
writeLines(toJSON(out, digits = 12, auto_unbox = TRUE, pretty = TRUE), "profile_refs.json")
