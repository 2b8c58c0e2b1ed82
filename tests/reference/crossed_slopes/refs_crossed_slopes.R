# lme4 references for the crossed-random-slopes designs of issue 8.
# usage (from this folder): Rscript refs_crossed_slopes.R
# reads designs.tsv and data/<data>.csv (made by make_data.py); fits every model with
# lme4 under both optimizers, lmerControl(optimizer = "nloptwrap") and "bobyqa" (maxfun
# 1e5, no derivative checks), and writes refs_crossed_slopes.json: per model, the best
# (lowest) objective of the two and that fit's theta, beta and sigma, plus both
# objectives and lme4's own isSingular().
suppressMessages({library(lme4); library(jsonlite)})
spec <- read.delim("designs.tsv", stringsAsFactors = FALSE)
# lme4's Arabidopsis (nested-ish popu / gen, 625 rows): exported for the Python side
data(Arabidopsis, package = "lme4")
write.csv(Arabidopsis[, c("popu", "gen", "nutrient", "amd", "total.fruits")],
          file.path("data", "arabidopsis.csv"), row.names = FALSE)
res <- list()
for (i in seq_len(nrow(spec))) {
  d <- read.csv(file.path("data", paste0(spec$data[i], ".csv")), stringsAsFactors = TRUE)
  if (spec$data[i] == "arabidopsis") { d$gen <- factor(d$gen); d$nutrient <- factor(d$nutrient) }
  reml <- as.logical(spec$REML[i])
  fits <- list()
  for (opt in c("nloptwrap", "bobyqa")) {
    ctrl <- lmerControl(optimizer = opt, calc.derivs = FALSE,
                        optCtrl = if (opt == "bobyqa") list(maxfun = 1e5) else list(maxeval = 1e5))
    t0 <- proc.time()[["elapsed"]]
    f <- suppressMessages(suppressWarnings(lmer(as.formula(spec$formula[i]), data = d,
                                                REML = reml, control = ctrl)))
    fits[[opt]] <- list(fit = f, time = proc.time()[["elapsed"]] - t0,
                        objective = if (reml) REMLcrit(f) else deviance(f),
                        feval = f@optinfo$feval)
  }
  objs <- sapply(fits, function(x) x$objective)
  best <- fits[[which.min(objs)]]$fit
  res[[spec$id[i]]] <- list(
    formula = spec$formula[i], data = spec$data[i], REML = reml,
    objective = min(objs), optimizer = names(fits)[which.min(objs)],
    objectives = as.list(objs), feval = lapply(fits, function(x) x$feval),
    seconds = lapply(fits, function(x) x$time),
    theta = I(unname(getME(best, "theta"))), theta_names = I(names(getME(best, "theta"))),
    beta = as.list(fixef(best)), sigma = sigma(best), singular = isSingular(best))
  cat(spec$id[i], sprintf("%.10f", objs), "\n")
}
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE), "refs_crossed_slopes.json")
